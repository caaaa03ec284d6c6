import { assertEquals } from "../testing/assert.ts";
import { settleOnChange } from "./settle.ts";

/** A value to wait on, and the subscription a replica's change feed would give. */
function source(initial: number) {
  let value = initial;
  const listeners = new Set<() => void>();
  return {
    set(v: number) {
      value = v;
      for (const l of listeners) l();
    },
    get: () => value,
    subscribe(l: () => void) {
      listeners.add(l);
      return () => listeners.delete(l);
    },
    get listeners() {
      return listeners.size;
    },
  };
}

const atLeast3 = (v: number) => v >= 3;

Deno.test("settle: already settled answers at once, subscribing nothing", async () => {
  const s = source(5);
  assertEquals(await settleOnChange(s.subscribe, s.get, atLeast3, { timeoutMs: 1_000 }), 5);
  assertEquals(s.listeners, 0);
});

Deno.test("settle: answers on the change that settles it, and unsubscribes", async () => {
  const s = source(0);
  const waiting = settleOnChange(s.subscribe, s.get, atLeast3, { timeoutMs: 60_000 });
  s.set(1);
  s.set(3);
  assertEquals(await waiting, 3);
  assertEquals(s.listeners, 0);
});

Deno.test("settle: at the deadline it answers with the value as it is", async () => {
  const s = source(1);
  assertEquals(await settleOnChange(s.subscribe, s.get, atLeast3, { timeoutMs: 20 }), 1);
  assertEquals(s.listeners, 0);
});

Deno.test("settle: no deadline (Infinity) waits for the change, not a timer firing at once", async () => {
  const s = source(0);
  const waiting = settleOnChange(s.subscribe, s.get, atLeast3, { timeoutMs: Infinity });
  let answered = false;
  waiting.then(() => answered = true);
  await new Promise((r) => setTimeout(r, 30));
  assertEquals(answered, false, "answered before anything changed");
  s.set(4);
  assertEquals(await waiting, 4);
});

Deno.test("settle: an abort answers with the value as it is", async () => {
  const s = source(2);
  const abort = new AbortController();
  const waiting = settleOnChange(s.subscribe, s.get, atLeast3, {
    timeoutMs: 60_000,
    signal: abort.signal,
  });
  abort.abort();
  assertEquals(await waiting, 2);
  assertEquals(s.listeners, 0);
});

Deno.test("settle: a check that throws at the deadline rejects the wait", async () => {
  const s = source(0);
  let calls = 0;
  const check = () => {
    if (++calls > 1) throw new Error("gone");
    return s.get();
  };
  let error = "";
  await settleOnChange(s.subscribe, check, atLeast3, { timeoutMs: 10 }).catch((e) =>
    error = String(e)
  );
  assertEquals(error, "Error: gone");
});
