import { InvalidArgumentError } from "commander";
import { assertEquals, assertThrows } from "../core/testing/assert.ts";
import {
  durationSeconds,
  durationText,
  integer,
  nonNegativeInt,
  positiveInt,
  sizeBytes,
  sizeGiB,
  sizeMiB,
} from "./parse.ts";
import { waitCondition } from "./vm.ts";

Deno.test("flag parsers: sizes and durations in every unit the API takes", () => {
  assertEquals(sizeMiB("1.5G"), 1536);
  assertEquals(sizeMiB("512M"), 512);
  assertEquals(sizeMiB("512"), 512);
  assertEquals(sizeGiB("10G"), 10);
  assertEquals(sizeGiB("1T"), 1024);
  assertEquals(sizeBytes("1.5G"), 1.5 * 2 ** 30);
  assertEquals(durationSeconds("5m"), 300);
  assertEquals(durationSeconds("90s"), 90);
  assertEquals(durationSeconds("1h"), 3600);
  assertEquals(durationSeconds("120"), 120);
  assertEquals(durationSeconds("1500ms"), 2);
  assertEquals(durationText(" 30d "), "30d");
});

Deno.test("flag parsers: anything else is commander's InvalidArgumentError (exit 2), never NaN or null", () => {
  const bad: [(t: string) => unknown, string][] = [
    [sizeMiB, "1.5X"],
    [sizeMiB, "2K"], // not a whole MiB
    [sizeGiB, "10M"],
    [sizeGiB, "0"],
    [sizeBytes, "lots"],
    [durationSeconds, "soon"],
    [durationSeconds, "0s"],
    [durationText, "1 week"],
    [integer, "abc"],
    [integer, "1.5"],
    [integer, ""],
    [nonNegativeInt, "-1"],
    [positiveInt, "0"],
    [positiveInt, "2x"],
  ];
  for (const [parse, text] of bad) assertThrows(() => parse(text), InvalidArgumentError);
  assertEquals([integer("-5"), integer("+7"), nonNegativeInt("0")], [-5, 7, 0]);
});

Deno.test("vm wait --for: state=STATE of the VM states, or delete", () => {
  assertEquals(waitCondition("state=running"), "running");
  assertEquals(waitCondition("state=stopped"), "stopped");
  assertEquals(waitCondition("delete"), "gone");
  for (const bad of ["running", "state=asleep", "state=", "deleted=1"]) {
    assertThrows(() => waitCondition(bad), InvalidArgumentError);
  }
});
