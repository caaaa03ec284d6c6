/** Prometheus metrics of a node, in one registry served at /metrics. */
import client from "prom-client";

export const registry = new client.Registry();

const LATENCY_BUCKETS = [
  0.0005,
  0.001,
  0.002,
  0.005,
  0.01,
  0.02,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
];

/** A gauge read from `Deno.memoryUsage()` when scraped. */
function memoryGauge(
  name: string,
  help: string,
  field: "rss" | "heapUsed" | "heapTotal" | "external",
): client.Gauge {
  return new client.Gauge({
    name,
    help,
    registers: [registry],
    collect() {
      this.set(Deno.memoryUsage()[field]);
    },
  });
}

/** VM counts by state while this node leads (null otherwise); set by the cluster wiring. */
let vmStateSource: (() => Partial<Record<string, number>> | null) | null = null;

/** Where `novactl_cluster_vms` reads from (core/cluster/cluster_metrics.ts). */
export function setVmStateSource(
  source: (() => Partial<Record<string, number>> | null) | null,
): void {
  vmStateSource = source;
}

export const metrics = {
  term: new client.Gauge({
    name: "novactl_raft_term",
    help: "Current Raft term",
    registers: [registry],
  }),
  commitIndex: new client.Gauge({
    name: "novactl_raft_commit_index",
    help: "Highest log index known committed",
    registers: [registry],
  }),
  appliedIndex: new client.Gauge({
    name: "novactl_raft_applied_index",
    help: "Highest log index applied to the state machine",
    registers: [registry],
  }),
  isLeader: new client.Gauge({
    name: "novactl_raft_is_leader",
    help: "1 if this node is the Raft leader",
    registers: [registry],
  }),
  leaderChanges: new client.Counter({
    name: "novactl_raft_leader_changes_total",
    help: "Leader changes observed by this node",
    registers: [registry],
  }),
  snapshots: new client.Counter({
    name: "novactl_raft_snapshots_total",
    help: "Local snapshots taken (log compactions)",
    registers: [registry],
  }),
  droppedNonMemberMessages: new client.Counter({
    name: "novactl_raft_dropped_non_member_messages_total",
    help: "Raft messages with a newer term from non-members (removed nodes), dropped unstepped",
    registers: [registry],
  }),
  orphanedFiles: new client.Gauge({
    name: "novactl_storage_orphaned_files",
    help: "Volumes and blobs on this host that no VM or image in cluster state refers to",
    labelNames: ["kind"] as const,
    registers: [registry],
  }),
  connectionsRefused: new client.Counter({
    name: "novactl_http_connections_refused_total",
    help:
      "Connections the listener closed at once because it held its maximum (NOVACTL_MAX_CONNECTIONS)",
    registers: [registry],
  }),
  tempFilesSwept: new client.Counter({
    name: "novactl_storage_temp_files_swept_total",
    help: "Leftover temporary files removed by the startup sweep",
    registers: [registry],
  }),
  eventStreams: new client.Gauge({
    name: "novactl_event_streams",
    help: "Open GET /api/v1/events streams on this node (one gone when its client goes away)",
    registers: [registry],
  }),
  auditDropped: new client.Counter({
    name: "novactl_audit_dropped_total",
    help: "Audit records this node dropped because its buffer was full (no leader reachable)",
    registers: [registry],
  }),
  proposalsDropped: new client.Counter({
    name: "novactl_raft_proposals_dropped_total",
    help: "Proposals refused because too many uncommitted bytes were pending",
    registers: [registry],
  }),
  peerMessagesDropped: new client.Counter({
    name: "novactl_peer_messages_dropped_total",
    help: "Raft messages dropped because a peer's send queue was full",
    registers: [registry],
  }),
  peerStreamsOpened: new client.Counter({
    name: "novactl_peer_streams_opened_total",
    help: "Raft streams this node opened to peers (one per peer while both run)",
    registers: [registry],
  }),
  peerStreamsEnded: new client.Counter({
    name: "novactl_peer_streams_ended_total",
    help: "Raft streams this node ended itself: retired (closed cleanly after their age limit), " +
      "stalled (the connection took nothing for seconds) or backlog (the peer fell megabytes behind)",
    labelNames: ["reason"] as const,
    registers: [registry],
  }),
  peerStreamFrames: new client.Counter({
    name: "novactl_peer_stream_frames_total",
    help: "Batches of Raft messages written to peer streams",
    registers: [registry],
  }),
  snapshotChunks: new client.Counter({
    name: "novactl_raft_snapshot_chunks_total",
    help: "Snapshot chunks sent or received",
    labelNames: ["direction"] as const,
    registers: [registry],
  }),
  proposalSeconds: new client.Histogram({
    name: "novactl_raft_proposal_duration_seconds",
    help: "Time from proposal to apply on the leader",
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  }),
  fsyncSeconds: new client.Histogram({
    name: "novactl_raft_log_sync_duration_seconds",
    help: "Time to durably write one Ready to the Raft log",
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  }),
  httpRequests: new client.Counter({
    name: "novactl_http_requests_total",
    help: "HTTP requests by route and status",
    labelNames: ["method", "route", "status"] as const,
    registers: [registry],
  }),
  httpSeconds: new client.Histogram({
    name: "novactl_http_request_duration_seconds",
    help: "HTTP request latency by route",
    labelNames: ["method", "route"] as const,
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  }),
  residentBytes: memoryGauge(
    "novactl_process_resident_memory_bytes",
    "Resident set size of the node process",
    "rss",
  ),
  heapUsedBytes: memoryGauge(
    "novactl_process_heap_used_bytes",
    "JavaScript heap in use (the rest of the resident set is the runtime, SQLite, buffers)",
    "heapUsed",
  ),
  heapTotalBytes: memoryGauge(
    "novactl_process_heap_total_bytes",
    "JavaScript heap reserved",
    "heapTotal",
  ),
  forcedGcSeconds: new client.Histogram({
    name: "novactl_process_forced_gc_seconds",
    help:
      "Pauses of the full collections the node ran because it was over its resident budget (core/memory)",
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  }),
  externalBytes: memoryGauge(
    "novactl_process_external_memory_bytes",
    "Memory outside the JavaScript heap that heap objects hold (ArrayBuffers, some strings)",
    "external",
  ),
  placements: new client.Counter({
    name: "novactl_placements_total",
    help: "New VMs the leader's planner decided, by outcome",
    labelNames: ["outcome"] as const,
    registers: [registry],
  }),
  planEntries: new client.Histogram({
    name: "novactl_plan_entry_creates",
    help: "VM creates per plan.apply entry the planner proposed",
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
    registers: [registry],
  }),
  networkDaemonRestarts: new client.Counter({
    name: "novactl_network_daemon_restarts_total",
    help: "OVS/OVN daemons the node's supervisor found dead and started again, by daemon",
    labelNames: ["daemon"] as const,
    registers: [registry],
  }),
  northboundPasses: new client.Counter({
    name: "novactl_network_northbound_passes_total",
    help: "Leader passes writing OVN's northbound DB from the replicated networks, by result",
    labelNames: ["result"] as const,
    registers: [registry],
  }),
  chassisDeleted: new client.Counter({
    name: "novactl_network_chassis_deleted_total",
    help: "Removed nodes' OVN chassis the leader deleted from the southbound DB",
    registers: [registry],
  }),
  guestIpMismatches: new client.Counter({
    name: "novactl_guest_ip_mismatches_total",
    help: "Times a guest agent reported a NIC's IPv4 addresses other than its IPAM address",
    registers: [registry],
  }),
  reportsPerRequest: new client.Histogram({
    name: "novactl_host_reports_per_request",
    help: "Reports per request a host sent to the leader",
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256],
    registers: [registry],
  }),
  // ---- cluster-wide, on the leader (core/cluster/cluster_metrics.ts, ha.ts) ----------
  clusterVms: new client.Gauge({
    name: "novactl_cluster_vms",
    help: "VMs by state in the cluster (exported by the leader only)",
    labelNames: ["state"] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const [state, n] of Object.entries(vmStateSource?.() ?? {})) this.set({ state }, n ?? 0);
    },
  }),
  haRestarts: new client.Counter({
    name: "novactl_ha_restarts_total",
    help: "HA VMs this node, as leader, restarted on another host",
    registers: [registry],
  }),
  migrations: new client.Counter({
    name: "novactl_migrations_total",
    help: "Migrations that ended while this node led, by result",
    labelNames: ["result"] as const,
    registers: [registry],
  }),
  operations: new client.Counter({
    name: "novactl_operations_total",
    help: "Long operations that ended while this node led, by kind and result",
    labelNames: ["kind", "result"] as const,
    registers: [registry],
  }),
  fencingEvents: new client.Counter({
    name: "novactl_fencing_events_total",
    help: "Fencing: host_lost (as leader, a host's lease surely expired) and vm_killed " +
      "(this host killed an HA VM when it lost its lease)",
    labelNames: ["event"] as const,
    registers: [registry],
  }),
  // ---- alerts, on the leader (core/cluster/alerts.ts) ---------------------------------
  alertTransitions: new client.Counter({
    name: "novactl_alert_transitions_total",
    help: "Alerts this node, as leader, fired or resolved, by state",
    labelNames: ["state"] as const,
    registers: [registry],
  }),
  alertWebhookDeliveries: new client.Counter({
    name: "novactl_alert_webhook_deliveries_total",
    help: "Alert webhook notifications, by result (delivered, or failed after every retry)",
    labelNames: ["result"] as const,
    registers: [registry],
  }),
  alertWebhookAttemptFailures: new client.Counter({
    name: "novactl_alert_webhook_attempt_failures_total",
    help:
      "Alert webhook POSTs that failed (timeout, network error, non-2xx); retried while any are left",
    registers: [registry],
  }),
  alertEvaluationSeconds: new client.Histogram({
    name: "novactl_alert_evaluation_seconds",
    help: "One evaluation of every alert rule by the leader, fetching hosts' samples included",
    buckets: [0.005, 0.01, 0.05, 0.1, 0.5, 1, 2, 5],
    registers: [registry],
  }),
};
