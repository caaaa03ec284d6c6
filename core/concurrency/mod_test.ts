import { assertEquals } from "../testing/assert.ts";
import { KeyedSerializer } from "./mod.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

testWithTimeout({
  name: "tasks of one key run in order, even after a failure; keys run concurrently",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const q = new KeyedSerializer();
  const log: string[] = [];
  const task = (name: string, ms: number, fail = false) => async () => {
    log.push(`start ${name}`);
    await new Promise((r) => setTimeout(r, ms));
    log.push(`end ${name}`);
    if (fail) throw new Error(name);
    return name;
  };
  const a1 = q.run("a", task("a1", 30, true));
  const a2 = q.run("a", task("a2", 1));
  const b1 = q.run("b", task("b1", 1));
  assertEquals(await a1.catch((e) => `failed ${e.message}`), "failed a1");
  assertEquals([await a2, await b1], ["a2", "b1"]);
  assertEquals(log.indexOf("end a1") < log.indexOf("start a2"), true);
  assertEquals(log.indexOf("end b1") < log.indexOf("end a1"), true, "b does not wait for a");
});
