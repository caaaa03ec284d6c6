/// <reference lib="dom" />
/** History routing under /ui/: the node answers index.html for every path there. */
import { useEffect, useState } from "preact/hooks";

export const BASE = "/ui";

/** The path after /ui (always starting with "/"). */
function current(): string {
  const p = location.pathname.startsWith(BASE) ? location.pathname.slice(BASE.length) : "/";
  return p === "" ? "/" : p;
}

export function navigate(path: string): void {
  history.pushState(null, "", BASE + path);
  dispatchEvent(new PopStateEvent("popstate"));
}

export function useRoute(): string {
  const [path, setPath] = useState(current());
  useEffect(() => {
    const on = () => setPath(current());
    addEventListener("popstate", on);
    return () => removeEventListener("popstate", on);
  }, []);
  return path;
}

/** Turns clicks on same-origin /ui/ links into history navigation. */
export function interceptLinks(): void {
  document.addEventListener("click", (e) => {
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey) return;
    const a = (e.target as Element).closest?.("a");
    const href = a?.getAttribute("href");
    if (!a || !href || !href.startsWith(BASE + "/") || a.target) return;
    e.preventDefault();
    navigate(href.slice(BASE.length));
  });
}
