import { assertEquals } from "./testing/assert.ts";
import { parseDuration, parseSize } from "./units.ts";

Deno.test("sizes: binary units, decimals, a default unit for bare numbers; nonsense is undefined", () => {
  assertEquals(parseSize("1.5G"), 1.5 * 2 ** 30);
  assertEquals(parseSize("512M"), 512 * 2 ** 20);
  assertEquals(parseSize("512MiB"), 512 * 2 ** 20);
  assertEquals(parseSize("10gb"), 10 * 2 ** 30);
  assertEquals(parseSize("4096"), 4096);
  assertEquals(parseSize("256", "M"), 256 * 2 ** 20);
  assertEquals(parseSize("1T"), 2 ** 40);
  for (const bad of ["", "G", "1.5X", "-1G", "1,5G", "ten"]) {
    assertEquals(parseSize(bad), undefined);
  }
});

Deno.test("durations: ms/s/m/h/d, sums like 1h30m, decimals, bare numbers in the default unit", () => {
  assertEquals(parseDuration("90s"), 90_000);
  assertEquals(parseDuration("30m"), 1_800_000);
  assertEquals(parseDuration("1h"), 3_600_000);
  assertEquals(parseDuration("1h30m"), 5_400_000);
  assertEquals(parseDuration("1.5h"), 5_400_000);
  assertEquals(parseDuration("500ms"), 500);
  assertEquals(parseDuration("7d"), 7 * 86_400_000);
  assertEquals(parseDuration("120"), 120_000);
  assertEquals(parseDuration("120", "ms"), 120);
  for (const bad of ["", "m", "1w", "-5s", "5 minutes", "1h-30m"]) {
    assertEquals(parseDuration(bad), undefined);
  }
});
