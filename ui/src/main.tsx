/// <reference lib="dom" />
/**
 * The dashboard's entry: sign-in, the navigation and the router. The VM detail page (its
 * charts and consoles) loads as a separate chunk, so the first page stays small.
 */
import { render } from "preact";
import { lazy, Suspense } from "preact/compat";
import { useEffect, useState } from "preact/hooks";
import "uplot/dist/uPlot.min.css";
import "@xterm/xterm/css/xterm.css";
import "./style.css";
import { savedToken, saveToken, setUnauthorizedHandler } from "./api.ts";
import { closeEvents } from "./events.ts";
import { Alerts, Audit, Groups, Images, Operations, Overview, SignIn, VmList } from "./pages.tsx";
import { interceptLinks, navigate, useRoute } from "./router.ts";

const VmDetail = lazy(() => import("./vm_detail.tsx"));

const NAV: [string, string][] = [
  ["/", "Cluster"],
  ["/vms", "VMs"],
  ["/images", "Images"],
  ["/groups", "Groups"],
  ["/operations", "Operations"],
  ["/alerts", "Alerts"],
  ["/audit", "Audit log"],
];

function Routed({ path }: { path: string }) {
  const vm = /^\/vms\/([^/]+)\/?$/.exec(path);
  if (vm) return <VmDetail name={decodeURIComponent(vm[1])} />;
  switch (path.replace(/\/$/, "") || "/") {
    case "/":
      return <Overview />;
    case "/vms":
      return <VmList />;
    case "/images":
      return <Images />;
    case "/groups":
      return <Groups />;
    case "/operations":
      return <Operations />;
    case "/alerts":
      return <Alerts />;
    case "/audit":
      return <Audit />;
  }
  return <p class="error">No page at {path}.</p>;
}

function App() {
  const [signedIn, setSignedIn] = useState(savedToken() !== null);
  const [notice, setNotice] = useState<string | null>(null);
  const path = useRoute();
  useEffect(() => {
    setUnauthorizedHandler((message) => {
      saveToken(null);
      closeEvents();
      setNotice(`Signed out: the API refused the token (${message}).`);
      setSignedIn(false);
    });
  }, []);
  if (!signedIn) return <SignIn notice={notice} onSignedIn={() => setSignedIn(true)} />;
  const section = "/" + (path.split("/")[1] ?? "");
  return (
    <div class="shell">
      <nav class="side">
        <a class="brand" href="/ui/">novactl</a>
        {NAV.map(([p, label]) => (
          <a key={p} href={`/ui${p}`} class={section === p ? "on" : ""}>
            {label}
          </a>
        ))}
        <button
          type="button"
          class="signout"
          onClick={() => {
            saveToken(null);
            closeEvents();
            setNotice(null);
            setSignedIn(false);
            navigate("/");
          }}
        >
          Sign out
        </button>
      </nav>
      <main>
        <Suspense fallback={<p class="muted">Loading…</p>}>
          <Routed path={path} />
        </Suspense>
      </main>
    </div>
  );
}

interceptLinks();
render(<App />, document.getElementById("app")!);
