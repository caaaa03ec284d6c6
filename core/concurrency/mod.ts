/**
 * Serializing async work per key: tasks for one key run one after another in
 * submission order, tasks for different keys run concurrently. Used for a
 * VM's reconciles and host operations, its state reports, and the leader's
 * placement decisions.
 */
export class KeyedSerializer<K = string> {
  private readonly tails = new Map<K, Promise<unknown>>();

  /** Runs `task` after every earlier task of `key` settled; its outcome is the caller's. */
  run<T>(key: K, task: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    const next = prev.then(task, task);
    const settled = next.catch(() => {});
    this.tails.set(key, settled);
    void settled.then(() => {
      if (this.tails.get(key) === settled) this.tails.delete(key);
    });
    return next;
  }
}
