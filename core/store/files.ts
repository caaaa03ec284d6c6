/** Small file-system helpers shared by the node's stores. */

/** Whether `path` exists; errors other than "not found" (permissions, I/O) are not hidden. */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}
