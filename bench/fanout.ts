/**
 * Fan-out: one completion delivered to 100 and to 1,000 follower clusters. The followers are
 * real inboxes on loopback (a farm of HTTP servers, one origin each) that verify every
 * delivery's HTTP signature with the sender's published key before counting it. Measured:
 * the time from the task's resolution to the last follower having verified its copy.
 *
 * Two layouts: `each` — every follower has its own inbox, so the sender makes one signed POST
 * per follower; `shared` — followers on one origin share an inbox (`endpoints.sharedInbox`),
 * so the sender makes one POST per origin, as the protocol asks it to.
 *
 * The follower rows are written straight into the sender's database (what the Follow → Accept
 * handshake would leave there); the handshake itself is not what this measures.
 *
 *   npm run bench -- fanout [--runs 5] [--backend embedded|postgres+redis]
 */
import { randomUUID } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { verifyReceived } from "../conformance/signing.ts";
import type { RunningCluster } from "../server/cluster.ts";
import { measureFloor, type Floor } from "./floor.ts";
import { startBenchClusters, summarize, until, type BenchBackend } from "./support.ts";

/** One fan-out configuration's result. */
export interface FanoutResult {
  readonly benchmark: "fanout";
  readonly backend: BenchBackend;
  readonly followers: number;
  readonly inboxes: "each" | "shared";
  /** POSTs the sender had to make. */
  readonly deliveries: number;
  readonly unit: "ms";
  readonly runs: ReturnType<typeof summarize>;
  readonly floor: Floor;
  /** deliveries × (RSA sign) on one core: the signing work alone, the bulk of the floor. */
  readonly signingFloorMs: number;
}

/** Followers per farm server (origin). */
const PER_ORIGIN = 100;

interface Farm {
  /** Follower rows for the sender's `followers` table. */
  readonly rows: { actor_id: string; inbox: string; shared_inbox: string | null }[];
  /** Verified deliveries naming `objectId`, and when the latest arrived (epoch ms). */
  delivered(objectId: string): { count: number; lastAt: number };
  /** Deliveries that failed verification. */
  readonly rejected: string[];
  close(): Promise<void>;
}

/** Starts `followers` follower actors spread over farm servers of {@link PER_ORIGIN} each. */
async function startFarm(
  followers: number,
  shared: boolean,
  senderKey: (keyId: string) => string | undefined,
): Promise<Farm> {
  const servers: Server[] = [];
  const rows: Farm["rows"] = [];
  const seen = new Map<string, { count: number; lastAt: number }>();
  const rejected: string[] = [];
  for (let start = 0; start < followers; start += PER_ORIGIN) {
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const body = Buffer.concat(chunks).toString("utf8");
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(req.headers)) {
          if (typeof v === "string") headers[k] = v;
        }
        const outcome = verifyReceived(
          {
            method: req.method ?? "POST",
            url: `${origin}${req.url ?? "/"}`,
            headers,
            body,
            receivedAt: Date.now(),
          },
          senderKey,
        );
        if (!outcome.ok) {
          rejected.push(outcome.reason);
          res.writeHead(401).end();
          return;
        }
        try {
          const activity = JSON.parse(body) as { object?: { id?: string } | string };
          const id = typeof activity.object === "string" ? activity.object : activity.object?.id;
          if (id != null)
            seen.set(id, { count: (seen.get(id)?.count ?? 0) + 1, lastAt: Date.now() });
        } catch {
          rejected.push("body is not JSON");
        }
        res.writeHead(202).end();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    servers.push(server);
    for (let i = start; i < Math.min(followers, start + PER_ORIGIN); i++) {
      rows.push({
        actor_id: `${origin}/actors/f${i}`,
        inbox: `${origin}/actors/f${i}/inbox`,
        shared_inbox: shared ? `${origin}/inbox` : null,
      });
    }
  }
  return {
    rows,
    rejected,
    delivered: (objectId) => seen.get(objectId) ?? { count: 0, lastAt: 0 },
    async close() {
      for (const s of servers) s.closeAllConnections();
      await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    },
  };
}

/** The sender's RSA public key, as its actor document publishes it. */
async function publishedKeys(sender: RunningCluster): Promise<Map<string, string>> {
  const response = await fetch(sender.urls.actor, {
    headers: { accept: "application/activity+json" },
  });
  const actor = (await response.json()) as {
    publicKey?: { id: string; publicKeyPem: string } | { id: string; publicKeyPem: string }[];
  };
  const keys = new Map<string, string>();
  const list = Array.isArray(actor.publicKey) ? actor.publicKey : [actor.publicKey];
  for (const k of list) if (k != null) keys.set(k.id, k.publicKeyPem);
  if (keys.size === 0) throw new Error(`${sender.urls.actor} publishes no RSA key`);
  return keys;
}

/** Runs fan-out to each size in `sizes`, both layouts, `runs` completions each. */
export async function fanout(
  backend: BenchBackend,
  options: { runs: number; sizes: readonly number[] },
  report: (result: FanoutResult) => void,
): Promise<void> {
  for (const followers of options.sizes) {
    for (const shared of [false, true]) {
      const { clusters, cleanup } = await startBenchClusters(backend, ["sender"]);
      const sender = clusters[0]!;
      let farm: Farm | undefined;
      try {
        const keys = await publishedKeys(sender);
        farm = await startFarm(followers, shared, (keyId) => keys.get(keyId));
        const now = new Date();
        for (let i = 0; i < farm.rows.length; i += 500) {
          await sender.database.db
            .insertInto("followers")
            .values(
              farm.rows.slice(i, i + 500).map((r) => ({
                ...r,
                follow_id: `${r.actor_id}#follow-${randomUUID()}`,
                state: "accepted" as const,
                updated_at: now,
              })),
            )
            .execute();
        }
        const deliveries = shared ? Math.ceil(followers / PER_ORIGIN) : followers;
        const samples: number[] = [];
        for (let run = 0; run < options.runs + 1; run++) {
          const taskId = `fan-${run}`;
          await sender.tasks.createTask({ taskId, payload: { command: ["true"] } });
          const taskUrl = sender.urls.task(taskId);
          const done = await until(async () => {
            const seen = farm!.delivered(taskUrl);
            return seen.count >= deliveries ? seen.lastAt : undefined;
          }, 120_000);
          const resolved = await sender.database.db
            .selectFrom("tasks")
            .select("resolved_at")
            .where("task_id", "=", taskId)
            .executeTakeFirstOrThrow();
          // The first completion warms up connections and caches; it is not counted.
          if (run > 0) samples.push(done - new Date(resolved.resolved_at!).getTime());
        }
        if (farm.rejected.length > 0) {
          throw new Error(`followers refused deliveries: ${farm.rejected.slice(0, 3).join("; ")}`);
        }
        const floor = await measureFloor(sender, 100);
        report({
          benchmark: "fanout",
          backend,
          followers,
          inboxes: shared ? "shared" : "each",
          deliveries,
          unit: "ms",
          runs: summarize(samples),
          floor,
          signingFloorMs: Math.round(deliveries * floor.rsaSignMs * 100) / 100,
        });
      } finally {
        await farm?.close();
        await cleanup();
      }
    }
  }
}
