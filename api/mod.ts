/** The REST API (Hono) served by every node: thin routes over core. */
export { createApp } from "./app.ts";
