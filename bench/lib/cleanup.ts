/**
 * What is still running that a test started: clusters and child processes register here while
 * they run, so a test that times out (tests/support/timeout.ts) can stop them even though its
 * own `finally` never ran. Within one test file; Deno runs a file's tests one at a time.
 */

export interface Stoppable {
  stop(): Promise<unknown>;
}

const running = new Set<Stoppable>();

/** Registers `resource` until the returned function is called. */
export function trackRunning(resource: Stoppable): () => void {
  running.add(resource);
  return () => void running.delete(resource);
}

/** Stops everything registered, newest first. */
export async function stopEverythingRunning(): Promise<void> {
  const resources = [...running].reverse();
  running.clear();
  for (const resource of resources) {
    await resource.stop().catch(() => {});
  }
}
