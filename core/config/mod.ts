/** Cluster configuration: schema, defaults and validation. */
export * from "./schema.ts";
