import { Hono } from "hono";
import { assertEquals } from "../core/testing/assert.ts";
import type { ClusterNode } from "../core/cluster/node.ts";
import { addressText, peerIdentity } from "./auth.ts";
import type { Env } from "./context.ts";
import { remoteAddress } from "./remote.ts";

Deno.test("client address: our listener's text, or the hostname of Deno.serve's NetAddr", () => {
  assertEquals(addressText("10.0.0.7"), "10.0.0.7");
  assertEquals(addressText({ transport: "tcp", hostname: "127.0.0.1", port: 40000 }), "127.0.0.1");
  assertEquals(addressText(undefined), "");
  assertEquals(addressText({ transport: "unix", path: "/run/x.sock" }), "");
});

Deno.test("client address: a handler served by Deno.serve records text, as audit needs", async () => {
  const app = new Hono<Env>();
  app.use(peerIdentity({} as ClusterNode));
  app.get("/", (c) => c.text(JSON.stringify(remoteAddress(c))));
  const info = { remoteAddr: { transport: "tcp", hostname: "127.0.0.1", port: 40000 } };
  const res = await app.fetch(new Request("http://node/"), info);
  assertEquals(await res.text(), '"127.0.0.1"');
});
