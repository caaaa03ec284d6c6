/// <reference lib="dom" />
/**
 * The VM's consoles in the page, over the node's WebSocket relays (token in the query:
 * browsers cannot set headers on a WebSocket):
 * - serial: `GET /api/v1/vms/NAME/console/ws`, raw bytes both ways in binary frames, shown
 *   and typed in xterm.js;
 * - graphical: `GET /api/v1/vms/NAME/vnc/ws` (subprotocol `binary`), RFB for noVNC.
 */
import { useEffect, useRef, useState } from "preact/hooks";
import { Terminal } from "@xterm/xterm";
import RFB from "@novnc/novnc";
import { streamUrl } from "./api.ts";

type Status = "connecting" | "connected" | "closed";

function StatusLine({ status, detail }: { status: Status; detail: string }) {
  return (
    <p class={`console-status ${status}`} data-testid="console-status" data-status={status}>
      {status}
      {detail && `: ${detail}`}
    </p>
  );
}

export function SerialConsole({ name }: { name: string }) {
  const el = useRef<HTMLDivElement>(null);
  const [status, setStatus] = useState<Status>("connecting");
  const [detail, setDetail] = useState("");
  useEffect(() => {
    const term = new Terminal({ convertEol: false, cursorBlink: true, scrollback: 5000 });
    term.open(el.current!);
    const ws = new WebSocket(streamUrl(`/vms/${encodeURIComponent(name)}/console/ws`, {}, true));
    ws.binaryType = "arraybuffer";
    const enc = new TextEncoder();
    ws.onopen = () => {
      setStatus("connected");
      term.focus();
    };
    ws.onmessage = (m) => {
      term.write(typeof m.data === "string" ? m.data : new Uint8Array(m.data as ArrayBuffer));
    };
    ws.onclose = (e) => {
      setStatus("closed");
      setDetail(e.reason || `code ${e.code}`);
    };
    const send = (bytes: Uint8Array<ArrayBuffer>) =>
      ws.readyState === WebSocket.OPEN && ws.send(bytes);
    const d1 = term.onData((s) => send(enc.encode(s)));
    // Bytes xterm reports as binary (some mouse modes) are one byte per char code.
    const d2 = term.onBinary((s) => send(Uint8Array.from(s, (c) => c.charCodeAt(0) & 0xff)));
    return () => {
      d1.dispose();
      d2.dispose();
      ws.close();
      term.dispose();
    };
  }, [name]);
  return (
    <div class="console">
      <StatusLine status={status} detail={detail} />
      <div class="term" ref={el} data-testid="serial-console" />
    </div>
  );
}

export function VncConsole({ name }: { name: string }) {
  const el = useRef<HTMLDivElement>(null);
  const [status, setStatus] = useState<Status>("connecting");
  const [detail, setDetail] = useState("");
  const rfb = useRef<RFB | null>(null);
  useEffect(() => {
    const r = new RFB(el.current!, streamUrl(`/vms/${encodeURIComponent(name)}/vnc/ws`, {}, true), {
      wsProtocols: ["binary"],
    });
    r.scaleViewport = true;
    r.resizeSession = false;
    r.addEventListener("connect", () => setStatus("connected"));
    r.addEventListener("disconnect", (e: Event) => {
      setStatus("closed");
      const clean = (e as CustomEvent<{ clean: boolean }>).detail?.clean;
      setDetail(clean ? "" : "connection lost or refused");
    });
    r.addEventListener("securityfailure", (e: Event) => {
      setDetail(String((e as CustomEvent<{ reason?: string }>).detail?.reason ?? "refused"));
    });
    rfb.current = r;
    return () => {
      r.disconnect();
      rfb.current = null;
    };
  }, [name]);
  return (
    <div class="console">
      <StatusLine status={status} detail={detail} />
      <div class="actions">
        <button type="button" onClick={() => rfb.current?.sendCtrlAltDel()}>
          Send Ctrl+Alt+Del
        </button>
      </div>
      <div class="vnc" ref={el} data-testid="vnc-console" />
    </div>
  );
}
