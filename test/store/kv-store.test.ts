import { Temporal as TemporalPolyfill } from "@js-temporal/polyfill";
import type { KvKey, KvStore } from "@fedify/fedify";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { openDatabase, type Database } from "../../server/store/database.ts";
import {
  createKyselyKvStore,
  decodeKvKey,
  encodeKvKey,
} from "../../server/store/kysely-kv-store.ts";
import { migrateToLatest } from "../../server/store/migrate.ts";
import { testBackends } from "../support/backends.ts";

/**
 * Fedify's types name the TypeScript library's global `Temporal`, while Node 22 has none
 * at run time and Fedify itself runs on the polyfill: the two are the same API.
 */
function ttl(ms: number): { ttl: Temporal.Duration } {
  return {
    ttl: TemporalPolyfill.Duration.from({ milliseconds: ms }) as unknown as Temporal.Duration,
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function listKeys(kv: KvStore, prefix?: KvKey): Promise<KvKey[]> {
  const keys: KvKey[] = [];
  for await (const entry of kv.list(prefix)) keys.push(entry.key);
  // Part by part, so that a key comes before its extensions.
  return keys.sort((a, b) => {
    const [x, y] = [a.join("\u0000"), b.join("\u0000")];
    return x < y ? -1 : x > y ? 1 : 0;
  });
}

describe("KV key encoding", () => {
  it("round-trips keys with quotes, backslashes, commas, NUL and non-ASCII text", () => {
    const keys: KvKey[] = [
      ["plain"],
      ["a", "b/c", "https://x.example/actor#main-key"],
      ['quo"te', "back\\slash", "com,ma", "nul\u0000", "日本語", ""],
    ];
    for (const key of keys) expect(decodeKvKey(encodeKvKey(key))).toEqual(key);
  });

  it("makes a key's encoding a prefix of its extensions' and of no other key's", () => {
    expect(encodeKvKey(["a", "b"]).startsWith(encodeKvKey(["a"]))).toBe(true);
    expect(encodeKvKey(["ab"]).startsWith(encodeKvKey(["a"]))).toBe(false);
    expect(encodeKvKey(['a",', "b"]).startsWith(encodeKvKey(["a"]))).toBe(false);
  });
});

for (const backend of testBackends()) {
  describe(`Kysely KV store on ${backend.name}`, () => {
    let database: Database;
    let kv: ReturnType<typeof createKyselyKvStore>;

    beforeAll(async () => {
      database = await openDatabase(backend.database());
      await migrateToLatest(database.db);
      kv = createKyselyKvStore(database.db);
    });

    beforeEach(async () => {
      await database.db.deleteFrom("kv").execute();
    });

    afterAll(async () => {
      await database?.close();
    });

    it("gives undefined for a key never set", async () => {
      expect(await kv.get(["missing"])).toBeUndefined();
    });

    it("returns what was set, for every kind of JSON value", async () => {
      const values: unknown[] = [
        "text",
        42,
        1.5,
        true,
        false,
        null,
        [1, "two", { three: 3 }],
        { nested: { list: [null, "x"] }, "key with spaces": "ok" },
      ];
      for (const [i, value] of values.entries()) await kv.set(["value", String(i)], value);
      for (const [i, value] of values.entries()) {
        expect(await kv.get(["value", String(i)])).toEqual(value);
      }
    });

    it("replaces the value of a key set twice", async () => {
      await kv.set(["k"], { v: 1 });
      await kv.set(["k"], { v: 2 });
      expect(await kv.get(["k"])).toEqual({ v: 2 });
    });

    it("forgets a key once its ttl has passed, and deletes the row when it meets it", async () => {
      await kv.set(["short"], "soon gone", ttl(200));
      await kv.set(["long"], "stays", ttl(60_000));
      expect(await kv.get(["short"])).toBe("soon gone");
      await sleep(300);
      expect(await kv.get(["short"])).toBeUndefined();
      expect(await kv.get(["long"])).toBe("stays");
      const rows = await database.db.selectFrom("kv").select("key").execute();
      expect(rows.map((row) => row.key)).toEqual([encodeKvKey(["long"])]);
    });

    it("clears a ttl when a key is set again without one", async () => {
      await kv.set(["k"], 1, ttl(100));
      await kv.set(["k"], 2);
      await sleep(200);
      expect(await kv.get(["k"])).toBe(2);
    });

    it("deletes a key, and deleting a missing key is fine", async () => {
      await kv.set(["gone"], 1);
      await kv.delete(["gone"]);
      await kv.delete(["never"]);
      expect(await kv.get(["gone"])).toBeUndefined();
    });

    it("swaps a value only when the current one equals the expected one", async () => {
      expect(await kv.cas(["c"], undefined, { n: 1 })).toBe(true);
      expect(await kv.cas(["c"], undefined, { n: 9 })).toBe(false);
      expect(await kv.cas(["c"], { n: 2 }, { n: 9 })).toBe(false);
      expect(await kv.get(["c"])).toEqual({ n: 1 });
      expect(await kv.cas(["c"], { n: 1 }, { n: 2 })).toBe(true);
      expect(await kv.get(["c"])).toEqual({ n: 2 });
    });

    it("compares values in cas by content, not by the order of object keys", async () => {
      await kv.set(["c"], { a: 1, b: [1, 2] });
      expect(await kv.cas(["c"], { b: [1, 2], a: 1 }, "next")).toBe(true);
      expect(await kv.get(["c"])).toBe("next");
    });

    it("treats an expired value as absent in cas", async () => {
      await kv.set(["c"], "old", ttl(100));
      await sleep(200);
      expect(await kv.cas(["c"], "old", "new")).toBe(false);
      expect(await kv.cas(["c"], undefined, "new", ttl(60_000))).toBe(true);
      expect(await kv.get(["c"])).toBe("new");
    });

    it("lets exactly one of many concurrent cas calls win", async () => {
      await kv.set(["counter"], 0);
      const results = await Promise.all(
        Array.from({ length: 10 }, (_, i) => kv.cas(["counter"], 0, i + 1)),
      );
      expect(results.filter(Boolean)).toHaveLength(1);
      const increments = Array.from({ length: 8 }, async () => {
        for (;;) {
          const current = (await kv.get<number>(["n"])) ?? undefined;
          if (await kv.cas(["n"], current, (current ?? 0) + 1)) return;
        }
      });
      await Promise.all(increments);
      expect(await kv.get(["n"])).toBe(8);
    });

    it("lists the entries under a prefix, the prefix's own key included", async () => {
      await kv.set(["a"], 1);
      await kv.set(["a", "b"], 2);
      await kv.set(["a", "b", "c"], 3);
      await kv.set(["ab"], 4);
      await kv.set(["b", "a"], 5);
      expect(await listKeys(kv, ["a"])).toEqual([["a"], ["a", "b"], ["a", "b", "c"]]);
      expect(await listKeys(kv, ["a", "b"])).toEqual([
        ["a", "b"],
        ["a", "b", "c"],
      ]);
      expect(await listKeys(kv)).toHaveLength(5);
      const entries: unknown[] = [];
      for await (const entry of kv.list(["a", "b", "c"])) entries.push(entry);
      expect(entries).toEqual([{ key: ["a", "b", "c"], value: 3 }]);
    });

    it("treats % and _ in a prefix as plain characters", async () => {
      await kv.set(["50%", "x"], 1);
      await kv.set(["50_", "y"], 2);
      await kv.set(["50a", "z"], 3);
      await kv.set(["5000", "w"], 4);
      await kv.set(["back\\slash", "v"], 5);
      expect(await listKeys(kv, ["50%"])).toEqual([["50%", "x"]]);
      expect(await listKeys(kv, ["50_"])).toEqual([["50_", "y"]]);
      expect(await listKeys(kv, ["back\\slash"])).toEqual([["back\\slash", "v"]]);
    });

    it("leaves expired entries out of a listing", async () => {
      await kv.set(["p", "old"], 1, ttl(100));
      await kv.set(["p", "new"], 2);
      await sleep(200);
      expect(await listKeys(kv, ["p"])).toEqual([["p", "new"]]);
    });

    it("lists more entries than one page holds", async () => {
      const total = 1201;
      await database.db
        .insertInto("kv")
        .values(
          Array.from({ length: total }, (_, i) => ({
            key: encodeKvKey(["many", String(i).padStart(5, "0")]),
            value: JSON.stringify(i),
          })),
        )
        .execute();
      const keys = await listKeys(kv, ["many"]);
      expect(keys).toHaveLength(total);
      expect(new Set(keys.map((key) => key[1])).size).toBe(total);
    });
  });
}
