/** Test support: reading what @grpc/proto-loader makes of a google.protobuf.Struct. */

/** A `google.protobuf.Value` as loaded with `oneofs: true` (its `kind` names the set field). */
export interface LoadedValue {
  kind?: string;
  [field: string]: unknown;
}

/** The plain JSON a loaded Struct stands for. */
export function plainStruct(s: { fields?: Record<string, LoadedValue> } | null | undefined) {
  return Object.fromEntries(
    Object.entries(s?.fields ?? {}).map(([k, v]) => [k, plainValue(v)]),
  ) as Record<string, unknown>;
}

function plainValue(v: LoadedValue): unknown {
  switch (v.kind) {
    case "structValue":
      return plainStruct(v.structValue as { fields?: Record<string, LoadedValue> });
    case "listValue":
      return ((v.listValue as { values?: LoadedValue[] }).values ?? []).map(plainValue);
    case "nullValue":
    case undefined:
      return null;
    default:
      return v[v.kind];
  }
}
