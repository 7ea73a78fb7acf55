/**
 * Server-side request forgery: URLs chosen by a peer that point at a private or special-use
 * address must not be fetched, whether they are a key id, a waited-on task or the target of
 * a redirect ([TW-DEREF-8]). The suite listens on 127.0.0.2, a loopback address other than
 * its peer's, and checks that nothing arrives there. A conforming server is configured to
 * allow exactly the suite's peer address (see README), so only these requests tell it apart
 * from one that allows every private address.
 * @module
 */
import { generateKeyPairSync, randomUUID } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { completedTaskInit, sleep, type Context } from "../context.ts";
import { fail, NotObservable, pass, type Check, type Verdict } from "../model.ts";
import { postRfc9421 } from "../signing.ts";
import { buildTaskCompleted } from "../../protocol/index.ts";

/** The loopback address the probe listens on: private, and not the suite's peer. */
const PROBE_HOST = "127.0.0.2";

interface Probe {
  readonly base: string;
  /** Requests the probe received, as `METHOD path`. */
  readonly received: string[];
  close(): Promise<void>;
}

/** Starts a listener on 127.0.0.2 that serves `documents` (path → JSON) and records requests. */
async function startProbe(documents: (base: string) => Map<string, unknown>): Promise<Probe> {
  const received: string[] = [];
  let served = new Map<string, unknown>();
  const server: Server = createServer((req, res) => {
    received.push(`${req.method ?? "GET"} ${req.url ?? "/"}`);
    const doc = served.get(new URL(req.url ?? "/", "http://probe").pathname);
    if (doc == null) {
      res.writeHead(404, { "content-type": "application/json" }).end("{}");
      return;
    }
    res.writeHead(200, { "content-type": "application/activity+json" });
    res.end(JSON.stringify(doc));
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, PROBE_HOST, () => resolve());
    });
  } catch (error) {
    throw new NotObservable(
      `the suite cannot listen on ${PROBE_HOST} on this machine (${String(error)})`,
    );
  }
  const base = `http://${PROBE_HOST}:${(server.address() as AddressInfo).port}`;
  served = documents(base);
  return {
    base,
    received,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * A fetch of 127.0.0.2 by the target is seen by the probe only when the target runs on the
 * suite's machine; otherwise it would reach the target's own loopback, and silence proves
 * nothing.
 */
function requireLocalTarget(ctx: Context): void {
  const host = new URL(ctx.inbox).hostname;
  const loopback = host === "localhost" || host === "[::1]" || /^127\./.test(host);
  if (!loopback) {
    throw new NotObservable(
      `the target (${host}) does not run on the suite's machine, so the suite cannot see whether it fetches ${PROBE_HOST}`,
    );
  }
}

/** Runs `act` with a probe up, waits, and passes when the probe saw no request. */
async function nothingFetched(
  ctx: Context,
  documents: (base: string) => Map<string, unknown>,
  act: (probe: Probe) => Promise<string | undefined>,
  settleMs = ctx.timing.settleMs,
): Promise<Verdict> {
  requireLocalTarget(ctx);
  const probe = await startProbe(documents);
  try {
    const problem = await act(probe);
    await sleep(settleMs);
    const problems = [
      ...(problem != null ? [problem] : []),
      ...(probe.received.length > 0
        ? [`the target fetched ${probe.base}: ${probe.received.slice(0, 3).join(", ")}`]
        : []),
    ];
    return problems.length === 0 ? pass() : fail(problems.join("; "));
  } finally {
    await probe.close();
  }
}

/** Dereferencing a waited-on task may go through a queue: give it longer than a refusal. */
const DEREFERENCE_SETTLE = (ctx: Context) => Math.max(ctx.timing.settleMs, 1000);

export const ssrfChecks: Check[] = [
  {
    id: "SSRF-01",
    area: "ssrf",
    level: "MUST",
    requirements: ["TW-DEREF-8"],
    title: `an activity whose actor and key id are on ${PROBE_HOST} is refused without fetching them`,
    async run(ctx) {
      const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 });
      const publicKeyPem = rsa.publicKey.export({ type: "spki", format: "pem" }).toString();
      return await nothingFetched(
        ctx,
        // A complete actor with the signing key: a server that fetches it would verify.
        (base) =>
          new Map([
            [
              "/actors/ssrf",
              {
                "@context": [
                  "https://www.w3.org/ns/activitystreams",
                  "https://w3id.org/security/v1",
                ],
                id: `${base}/actors/ssrf`,
                type: "Service",
                preferredUsername: "ssrf",
                inbox: `${base}/actors/ssrf/inbox`,
                publicKey: {
                  id: `${base}/actors/ssrf#main-key`,
                  owner: `${base}/actors/ssrf`,
                  publicKeyPem,
                },
              },
            ],
          ]),
        async (probe) => {
          const actorId = `${probe.base}/actors/ssrf`;
          const activity = buildTaskCompleted({
            id: `${actorId}/activities/${randomUUID()}`,
            actor: actorId,
            published: new Date(),
            task: completedTaskInit(`${actorId}/tasks/${randomUUID()}`, actorId),
          });
          const answer = await postRfc9421(ctx.inbox, JSON.stringify(activity), {
            keyId: `${actorId}#main-key`,
            privateKey: rsa.privateKey,
            privatePem: rsa.privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
          });
          return answer.status === 401 ? undefined : `expected 401, got ${answer.status}`;
        },
      );
    },
  },
  {
    id: "SSRF-02",
    area: "ssrf",
    level: "MUST",
    requirements: ["TW-DEREF-8"],
    title: `a waited-on task URL on ${PROBE_HOST} is never fetched`,
    needs: ["create-waiting-task"],
    run: (ctx) =>
      nothingFetched(
        ctx,
        (base) => new Map([["/tasks/t", { id: `${base}/tasks/t` }]]),
        async (probe) => {
          // Refusing to create the task is as good as never fetching it.
          await ctx.driver.createWaitingTask([`${probe.base}/tasks/t`]).catch(() => undefined);
          return undefined;
        },
        DEREFERENCE_SETTLE(ctx),
      ),
  },
  {
    id: "SSRF-03",
    area: "ssrf",
    level: "MUST",
    requirements: ["TW-DEREF-8"],
    title: `a redirect from the suite's peer to ${PROBE_HOST} is not followed`,
    needs: ["create-waiting-task"],
    run: (ctx) =>
      nothingFetched(
        ctx,
        (base) => new Map([["/tasks/t", { id: `${base}/tasks/t` }]]),
        async (probe) => {
          const upstream = ctx.peer.actors.upstream;
          const url = ctx.taskUrl(upstream);
          ctx.peer.redirects.set(url, `${probe.base}/tasks/t`);
          await ctx.driver.createWaitingTask([url]).catch(() => undefined);
          return undefined;
        },
        DEREFERENCE_SETTLE(ctx),
      ),
  },
];
