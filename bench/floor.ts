/**
 * The physical floor of federation work on this machine, measured in the same run as the
 * benchmark it is printed beside: what one RSA-2048 and one Ed25519 signature cost to make
 * and check, one HTTP round trip over loopback, one database commit and one queue hop on the
 * benchmark's own backend. A cross-cluster unblock cannot be faster than sign + verify +
 * round trip + commit + queue hop; every millisecond above that sum is the software's.
 */
import { generateKeyPairSync, randomBytes, sign, verify, type KeyObject } from "node:crypto";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import type { RunningCluster } from "../server/cluster.ts";
import { sql } from "../server/store/database.ts";
import { summarize } from "./support.ts";

/** Median cost of each part, in milliseconds, and the number of samples behind each. */
export interface Floor {
  readonly samples: number;
  readonly rsaSignMs: number;
  readonly rsaVerifyMs: number;
  readonly ed25519SignMs: number;
  readonly ed25519VerifyMs: number;
  readonly loopbackRoundTripMs: number;
  readonly databaseCommitMs: number;
  readonly queueHopMs: number;
  /** RSA sign + RSA verify + round trip + commit + queue hop: one signed delivery's floor. */
  readonly deliveryMs: number;
}

function median(values: number[]): number {
  return summarize(values).p50;
}

/** Times `step` `n` times and returns each duration in ms. */
async function timeEach(n: number, step: (i: number) => Promise<void> | void): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await step(i);
    out.push(performance.now() - t0);
  }
  return out;
}

function signatureCosts(
  n: number,
  algorithm: "sha256" | null,
  keys: { privateKey: KeyObject; publicKey: KeyObject },
) {
  const body = randomBytes(1024);
  const signature = sign(algorithm, body, keys.privateKey);
  const signMs: number[] = [];
  const verifyMs: number[] = [];
  for (let i = 0; i < n; i++) {
    let t0 = performance.now();
    sign(algorithm, body, keys.privateKey);
    signMs.push(performance.now() - t0);
    t0 = performance.now();
    if (!verify(algorithm, body, keys.publicKey, signature)) throw new Error("verify failed");
    verifyMs.push(performance.now() - t0);
  }
  return { sign: median(signMs), verify: median(verifyMs) };
}

async function loopbackRoundTrip(n: number): Promise<number> {
  const server = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      res.writeHead(202, { "content-length": "0" });
      res.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/inbox`;
  const body = randomBytes(1024).toString("base64");
  try {
    const times = await timeEach(n, async () => {
      const response = await fetch(url, { method: "POST", body });
      await response.arrayBuffer();
    });
    return median(times);
  } finally {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
}

/**
 * Measures the floor with `samples` repetitions of each part; the commit and the queue hop
 * use `cluster`'s own database and queue.
 */
export async function measureFloor(cluster: RunningCluster, samples = 200): Promise<Floor> {
  const rsa = signatureCosts(
    samples,
    "sha256",
    generateKeyPairSync("rsa", { modulusLength: 2048 }),
  );
  const ed = signatureCosts(samples, null, generateKeyPairSync("ed25519"));
  const roundTrip = await loopbackRoundTrip(samples);

  const db = cluster.database.db;
  const table = `bench_floor_${randomBytes(4).toString("hex")}`;
  await sql`create table ${sql.table(table)} (id integer primary key, body text)`.execute(db);
  const commit = median(
    await timeEach(samples, async (i) => {
      await db.transaction().execute(async (trx) => {
        await sql`insert into ${sql.table(table)} values (${i}, ${"x".repeat(512)})`.execute(trx);
      });
    }),
  );
  await sql`drop table ${sql.table(table)}`.execute(db);

  const queue = `bench-floor-${randomBytes(4).toString("hex")}`;
  let arrived: (() => void) | undefined;
  const consumer = await cluster.jobs.process(queue, async () => {
    arrived?.();
  });
  const hop = median(
    await timeEach(samples, async (i) => {
      const seen = new Promise<void>((resolve) => (arrived = resolve));
      await cluster.jobs.enqueue(queue, `hop-${i}`, { i });
      await seen;
    }),
  );
  await consumer.close();

  const round = (v: number) => Math.round(v * 1000) / 1000;
  return {
    samples,
    rsaSignMs: round(rsa.sign),
    rsaVerifyMs: round(rsa.verify),
    ed25519SignMs: round(ed.sign),
    ed25519VerifyMs: round(ed.verify),
    loopbackRoundTripMs: round(roundTrip),
    databaseCommitMs: round(commit),
    queueHopMs: round(hop),
    deliveryMs: round(rsa.sign + rsa.verify + roundTrip + commit + hop),
  };
}
