/**
 * The database's tables as Kysely sees them. Migrations in `./migrations/` create them;
 * this file must agree with the sum of those migrations (the store contract tests prove it).
 * @module
 */
import type { ColumnType, Generated, JSONColumnType } from "kysely";

type Timestamp = ColumnType<Date, Date | string, Date | string>;
type CreatedAt = ColumnType<Date, Date | string | undefined, never>;
/** int8 comes back as a string from pg and as a number from PGlite. */
type BigIntColumn = ColumnType<string | number, number | bigint, number | bigint>;
type Json<T extends object | null = Record<string, unknown>> = JSONColumnType<T, string, string>;

export interface ClusterKeysTable {
  id: Generated<number>;
  identifier: string;
  algorithm: "RSASSA-PKCS1-v1_5" | "Ed25519";
  private_jwk: Json<JsonWebKey>;
  public_jwk: Json<JsonWebKey>;
  created_at: CreatedAt;
  retired_at: Timestamp | null;
  /** The key's id in the actor document is `<actor>#<key_fragment>`; null: `key-<id>`. */
  key_fragment: ColumnType<string | null, string | null | undefined, string | null>;
}

export interface KvTable {
  key: string;
  value: ColumnType<unknown, string, string>;
  expires_at: Timestamp | null;
}

export interface JobsTable {
  queue: string;
  job_id: string;
  data: ColumnType<unknown, string, string>;
  run_at: Timestamp;
  attempts: Generated<number>;
  locked_until: Timestamp | null;
  created_at: CreatedAt;
  /** Order among due jobs: 0 first, then 1, 2, … (BullMQ's convention). */
  priority: Generated<number>;
}

export interface FollowersTable {
  actor_id: string;
  inbox: string;
  shared_inbox: string | null;
  follow_id: string;
  state: "accepted" | "pending" | "rejected";
  created_at: CreatedAt;
  updated_at: Timestamp;
  /** Set when the follower's inbox answered 404 or 410: nothing is delivered to it any more. */
  gone_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

export interface FollowingTable {
  actor_id: string;
  inbox: string;
  shared_inbox: string | null;
  follow_id: string;
  state: "pending" | "accepted" | "rejected";
  created_at: CreatedAt;
  updated_at: Timestamp;
  /** Id of the newest item of the followee's outbox this cluster has read (catch-up paging). */
  outbox_seen: ColumnType<string | null, string | null | undefined, string | null>;
}

export interface TasksTable {
  task_id: string;
  task_group_id: string;
  name: string;
  state: "unscheduled" | "pending" | "running" | "completed" | "failed" | "exception";
  requires: "all-completed" | "all-resolved";
  definition: Json<object>;
  retries: number;
  retries_left: number;
  deadline: Timestamp;
  created_at: CreatedAt;
  resolved_at: Timestamp | null;
  /** Bumped on every state change; lets pollers and caches see what moved. */
  updated_at: Timestamp;
  /** Not scheduled until activated (backfill); see migration 0002. */
  inactive: Generated<boolean>;
  /** One of {@link TASK_PRIORITIES}; see migration 0003. */
  priority: Generated<TaskPriority>;
  /** Waits for a person or an API call instead of a worker; see migration 0003. */
  breakpoint: Generated<boolean>;
}

/** A task's join (migration 0012): see `server/domain/task-joins.ts`. */
export interface TaskJoinsTable {
  task_id: string;
  deadline: Timestamp;
  at_deadline: "run" | "fail";
  /** `waiting`, then `complete` (all arrived), `closed` (ran without stragglers) or `failed`. */
  state: "waiting" | "complete" | "closed" | "failed";
  settled_at: Timestamp | null;
  /** The moment the join's `since` stands for; null without `since` (migration 0016). */
  since: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

/** One cluster of a join; the artifact columns are set when its first match arrives. */
export interface TaskJoinClustersTable {
  task_id: string;
  actor_id: string;
  /** Index in the definition's `join.clusters`. */
  position: number;
  artifact_url: string | null;
  task_url: string | null;
  name: string | null;
  /** Where the worker saves it, under the task's inputs directory. */
  path: string | null;
  arrived_at: Timestamp | null;
}

/** Taskcluster's priority levels, highest first. */
export const TASK_PRIORITIES = [
  "highest",
  "very-high",
  "high",
  "medium",
  "low",
  "very-low",
  "lowest",
] as const;

/** A task's priority. */
export type TaskPriority = (typeof TASK_PRIORITIES)[number];

export interface TaskGroupsTable {
  task_group_id: string;
  created_at: CreatedAt;
  /** Set when every active task of the group has resolved; cleared when one runs again. */
  resolved_at: Timestamp | null;
  /** How many times the group has resolved (a rerun or an activation reopens it). */
  resolutions: Generated<number>;
}

export interface TaskDependenciesTable {
  task_id: string;
  /** A local task id, or the https URL of a task on another cluster. */
  dependency: string;
  remote: boolean;
  /** The dependency's resolution once known: `completed`, `failed` or `exception`. */
  resolution: "completed" | "failed" | "exception" | null;
}

export interface TaskInputsTable {
  task_id: string;
  /** Relative path under the worker's inputs folder. */
  path: string;
  /** The artifact's id (URL) on its cluster. */
  artifact_url: string;
  task_url: string;
  /** The sha256 the worker verified the bytes against when a run last fetched it (0015). */
  sha256: ColumnType<string | null, string | null | undefined, string | null>;
}

export interface RunsTable {
  task_id: string;
  run_id: number;
  state: "pending" | "running" | "completed" | "failed" | "exception";
  reason_created: string;
  reason_resolved: string | null;
  worker_id: string | null;
  taken_until: Timestamp | null;
  scheduled_at: Timestamp;
  started_at: Timestamp | null;
  resolved_at: Timestamp | null;
  exit_code: number | null;
  log: string | null;
}

export interface ArtifactsTable {
  task_id: string;
  name: string;
  run_id: number;
  media_type: string;
  size: BigIntColumn;
  sha256: string;
  content: Uint8Array;
  created_at: CreatedAt;
  expires_at: Timestamp;
  /** Served only to accepted followers with a signed request; see migration 0005. */
  private: Generated<boolean>;
}

export interface OutboxTable {
  seq: Generated<BigIntColumn>;
  activity_id: string;
  types: Json<string[]>;
  /** The activity as built, compact JSON-LD with taskweb's inline context, before signing. */
  activity: Json<Record<string, unknown>>;
  published_at: Timestamp;
  /** Set once the activity was handed to the delivery queue for every follower. */
  fanned_out_at: Timestamp | null;
}

/**
 * An activity sent to particular inboxes, not published in the outbox (Follow, Accept,
 * Reject, Undo, Update of the actor); its `deliveries` rows name it by id.
 */
export interface AddressedActivitiesTable {
  activity_id: string;
  /** Compact JSON-LD as built, before signing. */
  activity: Json<Record<string, unknown>>;
  created_at: CreatedAt;
}

export interface InboxProcessedTable {
  activity_id: string;
  actor_id: string;
  types: Json<string[]>;
  received_at: CreatedAt;
  /** The task (or task group) URL the activity reported on; null when none (an Offer). */
  object_id: string | null;
}

export interface RemoteTasksTable {
  task_url: string;
  actor_id: string;
  state: string;
  resolved_at: Timestamp | null;
  source: "activity" | "dereference";
  updated_at: Timestamp;
}

export interface RemoteArtifactsTable {
  artifact_url: string;
  task_url: string;
  actor_id: string;
  name: string;
  content_url: string;
  sha256: string;
  size: BigIntColumn;
  media_type: string;
  updated_at: Timestamp;
  /** Its task's tags as last published (`{}` when none); see migration 0016. */
  tags: ColumnType<Record<string, string>, string | undefined, string>;
  /** When this cluster first recorded it; a later upsert leaves it. */
  received_at: Timestamp;
}

/** A secret's value, encrypted; see migration 0004 and server/domain/secret-cipher.ts. */
export interface SecretsTable {
  name: string;
  /** Fingerprint of the key that sealed the value. */
  key_id: string;
  iv: Uint8Array;
  ciphertext: Uint8Array;
  auth_tag: Uint8Array;
  created_at: CreatedAt;
  updated_at: Timestamp;
}

/** An API client; see migration 0005 and server/domain/auth.ts. */
export interface AuthClientsTable {
  client_id: string;
  description: Generated<string>;
  /** Hex SHA-256 of the token; the token is shown once and never stored. */
  token_hash: string;
  scopes: Json<string[]>;
  expires_at: Timestamp | null;
  disabled: Generated<boolean>;
  created_at: CreatedAt;
  rotated_at: Timestamp | null;
  last_used_at: Timestamp | null;
}

/** A role: `assume:<role_id>` grants its scopes; see server/domain/scopes.ts. */
export interface AuthRolesTable {
  role_id: string;
  description: Generated<string>;
  scopes: Json<string[]>;
  created_at: CreatedAt;
  updated_at: Timestamp;
}

/** A scope granted to a principal that is not a client, such as `actor:<url>`. */
export interface AuthGrantsTable {
  principal: string;
  scope: string;
  created_at: CreatedAt;
}

/** A scope pattern refused to every principal `principal` (a pattern, `*` suffix) covers. */
export interface AuthDenyRulesTable {
  principal: string;
  scope: string;
  created_at: CreatedAt;
}

/** The federation allowlist and blocklist: actor URLs or origins. */
export interface FederationActorRulesTable {
  list: "allow" | "block";
  pattern: string;
  created_at: CreatedAt;
}

/** Federation settings changed at run time, such as the follower acceptance mode. */
export interface FederationSettingsTable {
  key: string;
  value: string;
  updated_at: Timestamp;
}

/** One activity on its way to one inbox; see migration 0007 and server/federation/delivery.ts. */
export interface DeliveriesTable {
  activity_id: string;
  inbox: string;
  /** Generations of its queue job so far (sends, and waits behind an open circuit). */
  attempts: Generated<number>;
  /** Sends that failed and are retried; the backoff grows with them. */
  failures: Generated<number>;
  /** When the next attempt is due (or, while one is under way, when it is presumed lost). */
  next_attempt_at: Timestamp;
  created_at: CreatedAt;
  delivered_at: Timestamp | null;
  /** Given up: the horizon passed, or the inbox is gone (404/410). */
  abandoned_at: Timestamp | null;
  last_status: number | null;
  last_error: string | null;
}

/** The delivery health of one peer inbox, shared by every process of the cluster. */
export interface DeliveryPeersTable {
  inbox: string;
  last_success_at: Timestamp | null;
  last_failure_at: Timestamp | null;
  consecutive_failures: Generated<number>;
  circuit: ColumnType<
    "closed" | "open" | "half-open",
    "closed" | "open" | "half-open" | undefined,
    "closed" | "open" | "half-open"
  >;
  /** When the circuit last opened. */
  opened_at: Timestamp | null;
  /** While half-open: the probe of one process holds the circuit until then. */
  probe_until: Timestamp | null;
  /** The inbox answered 404 or 410. */
  gone_at: Timestamp | null;
}

/** A hook; see migration 0009 and server/domain/hooks.ts. */
export interface HooksTable {
  hook_id: string;
  description: string;
  filter: Json<Record<string, unknown>>;
  coalesce: Json<Record<string, unknown> | null>;
  /** Values of the template's declared parameters. */
  parameters: Json<Record<string, string>>;
  /** The newest version in `hook_templates`, the one new fires use. */
  template_version: number;
  created_at: CreatedAt;
  updated_at: Timestamp;
}

/** One version of a hook's graph template. */
export interface HookTemplatesTable {
  hook_id: string;
  version: number;
  template: Json<Record<string, unknown>>;
  created_at: CreatedAt;
}

/** One activity a hook matched, and what became of it. */
export interface HookFiresTable {
  fire_id: string;
  hook_id: string;
  activity_id: string;
  actor_id: string;
  template_version: number;
  /** Fires of a hook with equal keys coalesce; "" when the hook does not coalesce by key. */
  coalesce_key: string;
  state: "pending" | "fired" | "superseded" | "failed";
  /** The event parameters the template is instantiated with. */
  event: Json<Record<string, string>>;
  task_group_id: string | null;
  superseded_by: string | null;
  error: string | null;
  received_at: CreatedAt;
  seq: Generated<BigIntColumn>;
  due_at: Timestamp | null;
  fired_at: Timestamp | null;
}

/** An offer of a task graph this cluster sent; see migration 0009. */
export interface OffersSentTable {
  offer_id: string;
  target_actor: string;
  task_group_id: string;
  graph: Json<Record<string, unknown>>;
  state: "pending" | "accepted" | "rejected";
  /** The group's URL on the target cluster, from its Accept. */
  task_group_url: string | null;
  reason: string | null;
  created_at: CreatedAt;
  updated_at: Timestamp;
}

/** An offer of a task graph this cluster accepted (a rejected one leaves no row). */
export interface OffersReceivedTable {
  offer_id: string;
  actor_id: string;
  task_group_id: string;
  /** The last TaskGroupResolved sent back to the offering cluster. */
  callback_activity_id: string | null;
  created_at: CreatedAt;
}

/** A followed cluster whose activities this cluster relays (`Announce`s); see migration 0009. */
export interface RelaySourcesTable {
  actor_id: string;
  created_at: CreatedAt;
}

/** The Announce that re-published an original activity of a relay source; see migration 0013. */
export interface RelayAnnouncesTable {
  activity_id: string;
  announce_id: string;
  created_at: CreatedAt;
}

/** An activity accepted through a relay, kept with its original proof (its provenance). */
export interface RelayedActivitiesTable {
  activity_id: string;
  announce_id: string;
  relayed_by: string;
  original_actor: string;
  /** The original activity as signed by its cluster, `proof` included. */
  activity: Json<Record<string, unknown>>;
  received_at: CreatedAt;
}

/** Every table, for `Kysely<DatabaseSchema>`. */
export interface DatabaseSchema {
  cluster_keys: ClusterKeysTable;
  kv: KvTable;
  jobs: JobsTable;
  followers: FollowersTable;
  following: FollowingTable;
  tasks: TasksTable;
  task_groups: TaskGroupsTable;
  task_dependencies: TaskDependenciesTable;
  task_inputs: TaskInputsTable;
  runs: RunsTable;
  artifacts: ArtifactsTable;
  outbox: OutboxTable;
  inbox_processed: InboxProcessedTable;
  remote_tasks: RemoteTasksTable;
  remote_artifacts: RemoteArtifactsTable;
  secrets: SecretsTable;
  auth_clients: AuthClientsTable;
  auth_roles: AuthRolesTable;
  auth_grants: AuthGrantsTable;
  auth_deny_rules: AuthDenyRulesTable;
  federation_actor_rules: FederationActorRulesTable;
  federation_settings: FederationSettingsTable;
  deliveries: DeliveriesTable;
  addressed_activities: AddressedActivitiesTable;
  delivery_peers: DeliveryPeersTable;
  hooks: HooksTable;
  hook_templates: HookTemplatesTable;
  hook_fires: HookFiresTable;
  offers_sent: OffersSentTable;
  offers_received: OffersReceivedTable;
  relay_sources: RelaySourcesTable;
  relayed_activities: RelayedActivitiesTable;
  relay_announces: RelayAnnouncesTable;
  task_joins: TaskJoinsTable;
  task_join_clusters: TaskJoinClustersTable;
}
