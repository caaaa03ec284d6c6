/**
 * Holds answers of the API to its OpenAPI document: for a method, path and status, the
 * documented response's JSON schema (its `$ref`s resolved in the document's components) must
 * accept the body. Used by api/openapi/openapi_test.ts on the in-process app and, with
 * NOVACTL_CHECK_OPENAPI=1, by tests/support/api.ts on every answer of a real node.
 *
 * @module
 */
import { Ajv } from "ajv";

/** The parts of an OpenAPI document the check reads. */
export interface OpenApiDoc {
  // deno-lint-ignore no-explicit-any
  paths: Record<string, Record<string, any>>;
  components: Record<string, unknown>;
}

/** Checks answers against `doc`; `checked` names each `method path status` it held to it. */
export class ResponseChecker {
  readonly checked = new Set<string>();
  #doc: OpenApiDoc;
  #ajv = new Ajv({ strict: false, allErrors: true });
  #routes: { path: string; re: RegExp; params: number }[];

  constructor(doc: OpenApiDoc) {
    this.#doc = doc;
    this.#routes = Object.keys(doc.paths).map((p) => ({
      path: p,
      re: new RegExp(`^${p.replace(/\{[^}]+\}/g, "[^/]+")}$`),
      params: (p.match(/\{/g) ?? []).length,
    }));
  }

  /**
   * Throws unless the document has the route and status, and its schema accepts `body`.
   * `path` may carry a query string. A non-JSON documented answer is not checked.
   */
  check(method: string, path: string, status: number, body: unknown): void {
    const m = method.toLowerCase();
    const pathname = path.split("?")[0];
    // The most literal route wins: `/vms/{name}/wait` before `/vms/{name}/{x}`-like ones.
    const route = this.#routes.filter((r) => r.re.test(pathname) && this.#doc.paths[r.path][m])
      .sort((a, b) => a.params - b.params)[0];
    if (!route) throw new Error(`${method} ${pathname}: no documented route`);
    const op = this.#doc.paths[route.path][m];
    const answer = op.responses[String(status)] ?? (status >= 400 ? op.responses.default : null);
    if (!answer) throw new Error(`${method} ${route.path}: status ${status} not documented`);
    const content = answer.content ?? {};
    if (!content["application/json"]) return;
    const schema = content["application/json"].schema;
    if (!this.#ajv.validate({ ...schema, components: this.#doc.components }, body)) {
      throw new Error(
        `${method} ${path} → ${status} does not fit its documented schema: ${
          this.#ajv.errorsText(this.#ajv.errors)
        }\n${JSON.stringify(body).slice(0, 600)}`,
      );
    }
    this.checked.add(`${m} ${route.path} ${status}`);
  }
}
