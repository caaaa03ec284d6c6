/**
 * The gRPC API (novactl/v1/novactl.proto): nodes, VMs, images, operations and the event
 * stream, served with Connect (`@connectrpc/connect`, protobuf-es v2), so gRPC, gRPC-Web
 * and Connect clients all work. Off unless `node start --grpc-port PORT` is given.
 *
 * **Its own port.** gRPC needs HTTP/2 and trailers (`grpc-status` follows the messages).
 * Measured on Deno 2.9.6: `Deno.serve` speaks h2 (over TLS by ALPN, and h2c with prior
 * knowledge), but a Fetch `Response` has no trailers, so it cannot answer a successful gRPC
 * call; and the node's port belongs to the connection guard (api/connection_guard.ts),
 * which offers only HTTP/1.1 by ALPN and splices plaintext to `Deno.serve`. `node:http2`'s
 * server in Deno sends trailers (the test's @grpc/grpc-js client reads them), and Connect's
 * Node adapter runs on it: so the gRPC listener is `node:http2` (h2c, behind a guard) on a port of
 * its own. That port has a connection guard of its own too (server.ts): the same header and
 * idle timeouts, connection cap and certificate switch as the main port's, with h2 offered by
 * ALPN and spliced to `node:http2` in clear, HTTP/1.1 (Connect and gRPC-Web clients without
 * h2) to `node:http`. Clients trust the cluster CA, as for REST.
 *
 * **A thin layer over REST's own path.** Each RPC is the REST request of the same name, run
 * in-process through the node's Hono app (services.ts; no network hop): so authentication
 * (the `authorization: Bearer TOKEN` metadata), roles, validation with field names, audit
 * records, forwarding to the leader (or to a VM's host), redaction of secrets and the calls
 * into core/cluster are REST's by construction, and cannot drift from it. Only the
 * caller's `authorization` and `if-match` metadata are passed on: peer headers never are.
 * The request is audited as the REST route it runs (e.g. `POST /api/v1/vms/:name/start`),
 * with the RPC as the record's `detail` (`ServerBindings.via`, carried to the leader on a
 * forward).
 * Errors map from the project's error codes to gRPC codes in one place (errors.ts).
 *
 * `deno task gen:proto` regenerates gen/ (committed) with buf and protoc-gen-es from npm.
 *
 * @module
 */
export { GrpcServer } from "./server.ts";
export { novactlServices } from "./services.ts";
export { connectCodeOf, connectErrorOf, ERROR_FIELDS_METADATA } from "./errors.ts";
