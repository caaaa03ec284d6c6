import { assert, assertEquals } from "../core/testing/assert.ts";
import { jsonJoined, PIECE_CHARS } from "./json_body.ts";

async function pieces(body: string | ReadableStream<Uint8Array>): Promise<string[]> {
  if (typeof body === "string") return [body];
  const decoder = new TextDecoder();
  const out: string[] = [];
  for await (const chunk of body) out.push(decoder.decode(chunk));
  return out;
}

Deno.test("jsonJoined: a small answer is one string", async () => {
  const body = jsonJoined(`{"vms":[`, ['{"name":"a"}', '{"name":"b"}'], `]}`);
  assertEquals(typeof body, "string");
  assertEquals(await pieces(body), ['{"vms":[{"name":"a"},{"name":"b"}]}']);
  assertEquals(await pieces(jsonJoined(`{"vms":[`, [], `]}`)), ['{"vms":[]}']);
});

Deno.test("jsonJoined: a large answer streams in pieces that join to the same JSON", async () => {
  const items = Array.from(
    { length: 3_000 },
    (_, i) => JSON.stringify({ name: `vm-${i}`, pad: "é".repeat(90) }),
  );
  const tail = `],"continue":"x"}`;
  const got = await pieces(jsonJoined(`{"vms":[`, items, tail));
  assert(got.length > 3, `expected several pieces, got ${got.length}`);
  const longest = Math.max(...items.map((s) => s.length));
  for (const p of got) {
    assert(p.length <= PIECE_CHARS + longest + tail.length, `piece of ${p.length}`);
  }
  const whole = got.join("");
  assertEquals(whole, `{"vms":[${items.join(",")}${tail}`);
  assertEquals((JSON.parse(whole) as { vms: unknown[] }).vms.length, 3_000);
});

Deno.test("jsonJoined: pieces are made as the reader takes them, not up front", async () => {
  const items = Array.from({ length: 2_000 }, (_, i) => `"${"x".repeat(100)}${i}"`);
  let read = 0; // items the stream has read so far
  const counted = new Proxy(items, {
    get: (t, k) => (typeof k === "string" && /^\d+$/.test(k) && read++, Reflect.get(t, k)),
  });
  const body = jsonJoined("[", counted, "]");
  const readBySizing = read;
  assert(body instanceof ReadableStream);
  const reader = body.getReader();
  const first = await reader.read();
  assert(!first.done);
  await new Promise((r) => setTimeout(r, 10)); // room for any eager pulls
  const inFirst = new TextDecoder().decode(first.value).split(",").length;
  assert(
    read - readBySizing <= inFirst + 1,
    `read ${read - readBySizing} items for a first piece of ${inFirst}`,
  );
  await reader.cancel();
});
