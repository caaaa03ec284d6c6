/**
 * Alert webhooks against a local Deno.serve receiver: a first attempt that fails is retried
 * and the body arrives; a receiver that always fails gets exactly the bounded attempts, and
 * the failure is counted; a 4xx is not retried; backoff doubles and is capped.
 */
import { assert, assertEquals } from "../testing/assert.ts";
import { registry } from "../metrics/mod.ts";
import { type AlertNotification, backoffMs, deliver, type RetryPolicy } from "./webhook.ts";

const BODY: AlertNotification = {
  rule: "hot",
  metric: "vm.cpu",
  subject: "web1",
  state: "firing",
  value: 97,
  comparison: "above",
  threshold: 90,
  forSeconds: 300,
  since: "2026-01-01T00:00:00.000Z",
  firedAt: "2026-01-01T00:05:00.000Z",
  resolvedAt: null,
  node: "n1",
};
const FAST: RetryPolicy = { attempts: 3, baseDelayMs: 10, maxDelayMs: 50, timeoutMs: 2_000 };

/** A receiver answering `statuses` in turn (then 200); returns what it received. */
function receiver(statuses: number[]) {
  const got: unknown[] = [];
  let calls = 0;
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async (req) => {
    const status = statuses[calls++] ?? 200;
    const body = await req.json();
    if (status === 200) got.push(body);
    return new Response(null, { status });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}/hook`,
    got,
    calls: () => calls,
    close: () => server.shutdown(),
  };
}

async function counter(name: string, labels: string): Promise<number> {
  const text = await registry.metrics();
  const line = text.split("\n").find((l) => l.startsWith(`${name}${labels} `));
  return line ? Number(line.split(" ")[1]) : 0;
}

Deno.test("webhook: a failed first attempt is retried and the alert arrives", async () => {
  const r = receiver([503]);
  try {
    const d = await deliver(r.url, BODY, FAST);
    assertEquals(d, { ok: true, attempts: 2, error: null });
    assertEquals(r.calls(), 2);
    assertEquals(r.got, [BODY]);
  } finally {
    await r.close();
  }
});

Deno.test("webhook: retries are bounded, a 4xx is not retried, failures are counted", async () => {
  const failed = () => counter("novactl_alert_webhook_deliveries_total", '{result="failed"}');
  const before = await failed();
  const r = receiver([500, 500, 500, 500, 500]);
  try {
    const d = await deliver(r.url, BODY, FAST);
    assertEquals(d.ok, false);
    assertEquals(d.attempts, 3);
    assertEquals(d.error, "HTTP 500");
    assertEquals(r.calls(), 3, "exactly the policy's attempts");
  } finally {
    await r.close();
  }
  const bad = receiver([400]);
  try {
    assertEquals((await deliver(bad.url, BODY, FAST)).attempts, 1);
  } finally {
    await bad.close();
  }
  const nobody = await deliver("http://127.0.0.1:9/hook", BODY, { ...FAST, attempts: 2 });
  assert(!nobody.ok && nobody.error !== null, "a refused connection fails");
  assertEquals(await failed(), before + 3);
});

Deno.test("webhook: backoff doubles from the base and is capped", () => {
  assertEquals([1, 2, 3, 4, 5].map((n) => backoffMs(n, FAST)), [0, 10, 20, 40, 50]);
});
