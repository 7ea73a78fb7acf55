/**
 * Which network addresses an outbound fetch may connect to. Private and special-use
 * addresses (loopback, RFC 1918, link-local and cloud metadata, shared address space,
 * documentation, benchmarking, multicast, reserved, and the IPv6 ranges that embed an IPv4
 * address: IPv4-mapped, NAT64, 6to4, Teredo) are refused, unless an entry of the cluster's
 * explicit allowlist names them. There is no switch that turns the check off.
 * @module
 */
import { BlockList, isIP } from "node:net";

/** IPv4 ranges that are not on the public internet (RFC 6890 and later registry entries). */
const SPECIAL_USE_IPV4: readonly [string, number][] = [
  ["0.0.0.0", 8], // "this network"
  ["10.0.0.0", 8], // private
  ["100.64.0.0", 10], // shared address space (carrier-grade NAT)
  ["127.0.0.0", 8], // loopback
  ["169.254.0.0", 16], // link-local, cloud metadata (169.254.169.254)
  ["172.16.0.0", 12], // private
  ["192.0.0.0", 24], // IETF protocol assignments
  ["192.0.2.0", 24], // documentation
  ["192.88.99.0", 24], // 6to4 relay anycast
  ["192.168.0.0", 16], // private
  ["198.18.0.0", 15], // benchmarking
  ["198.51.100.0", 24], // documentation
  ["203.0.113.0", 24], // documentation
  ["224.0.0.0", 4], // multicast
  ["240.0.0.0", 4], // reserved, broadcast
];

/** IPv6 ranges that are not on the public internet or that tunnel to an IPv4 address. */
const SPECIAL_USE_IPV6: readonly [string, number][] = [
  ["::", 96], // unspecified, loopback, IPv4-compatible
  ["::ffff:0:0", 96], // IPv4-mapped
  ["64:ff9b::", 96], // NAT64
  ["64:ff9b:1::", 48], // local-use NAT64
  ["100::", 64], // discard-only
  ["2001::", 23], // IETF protocol assignments, Teredo (2001::/32)
  ["2001:db8::", 32], // documentation
  ["2002::", 16], // 6to4
  ["3fff::", 20], // documentation
  ["5f00::", 16], // segment routing
  ["fc00::", 7], // unique local
  ["fe80::", 10], // link-local
  ["fec0::", 10], // site-local (deprecated)
  ["ff00::", 8], // multicast
];

// Two lists: Node's BlockList matches IPv4 addresses against IPv6 rules for the ranges that
// embed IPv4 (`::/96`, `::ffff:0:0/96`), which would refuse every IPv4 address.
const specialUseV4 = new BlockList();
const specialUseV6 = new BlockList();
for (const [address, prefix] of SPECIAL_USE_IPV4) specialUseV4.addSubnet(address, prefix, "ipv4");
for (const [address, prefix] of SPECIAL_USE_IPV6) specialUseV6.addSubnet(address, prefix, "ipv6");

/** Thrown for an allowlist entry that is neither a CIDR, an address, nor `address:port`. */
export class AllowlistEntryError extends Error {
  override readonly name = "AllowlistEntryError";
}

/** A checked allowlist: `allows(address, port)` says whether one entry admits the pair. */
export interface PrivateAddressAllowlist {
  /** The entries as given, for messages. */
  readonly entries: readonly string[];
  allows(address: string, port: number): boolean;
}

/** Strips the brackets of an IPv6 literal as URLs write it. */
export function unbracket(host: string): string {
  return host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
}

/**
 * The IPv4 address an IPv4-mapped IPv6 address stands for (`::ffff:127.0.0.1` or its hex
 * form `::ffff:7f00:1`), else the address unchanged.
 */
export function unmapIpv4(address: string): string {
  const lower = address.toLowerCase();
  const dotted = /^(?:0{0,4}:){0,5}:?ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(lower);
  if (dotted?.[1] != null && isIP(dotted[1]) === 4) return dotted[1];
  const hex = /^(?:0{0,4}:){0,5}:?ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(lower);
  if (hex?.[1] != null && hex[2] != null) {
    const hi = parseInt(hex[1], 16);
    const lo = parseInt(hex[2], 16);
    return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  }
  return address;
}

/**
 * Parses allowlist entries: a CIDR (`127.0.0.1/32`, `fd00::/8`), a bare address (the
 * same as a one-address CIDR), or an address with a port (`127.0.0.1:7300`,
 * `[::1]:7300`) that admits that port only.
 * @throws {AllowlistEntryError} for an entry that is none of these.
 */
export function parseAllowlist(entries: readonly string[]): PrivateAddressAllowlist {
  const subnets = new BlockList();
  const pairs = new Set<string>();
  for (const raw of entries) {
    const entry = raw.trim();
    if (entry === "") continue;
    const cidr = /^(.+)\/(\d{1,3})$/.exec(entry);
    if (cidr?.[1] != null && cidr[2] != null) {
      const family = isIP(cidr[1]);
      const prefix = Number(cidr[2]);
      if (family === 0 || prefix > (family === 4 ? 32 : 128)) {
        throw new AllowlistEntryError(`${JSON.stringify(entry)} is not a valid CIDR.`);
      }
      subnets.addSubnet(cidr[1], prefix, family === 4 ? "ipv4" : "ipv6");
      continue;
    }
    const family = isIP(entry);
    if (family !== 0) {
      subnets.addAddress(entry, family === 4 ? "ipv4" : "ipv6");
      continue;
    }
    const withPort = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(entry);
    const host = withPort?.[1] != null ? unbracket(withPort[1]) : undefined;
    const port = Number(withPort?.[2]);
    if (host == null || isIP(host) === 0 || !(port >= 1 && port <= 65535)) {
      throw new AllowlistEntryError(
        `${JSON.stringify(entry)} is not a CIDR, an IP address or <ip>:<port> (names are not allowed: they can resolve anywhere).`,
      );
    }
    pairs.add(`${unmapIpv4(host).toLowerCase()}|${port}`);
  }
  const list = entries.map((e) => e.trim()).filter((e) => e !== "");
  return {
    entries: list,
    allows(address, port) {
      const plain = unmapIpv4(unbracket(address));
      const family = isIP(plain);
      if (family === 0) return false;
      if (pairs.has(`${plain.toLowerCase()}|${port}`)) return true;
      return subnets.check(plain, family === 4 ? "ipv4" : "ipv6");
    },
  };
}

/** True when `address` is private or special-use (before any allowlist). */
export function isSpecialUseAddress(address: string): boolean {
  const plain = unbracket(address);
  const family = isIP(plain);
  if (family === 0) return true; // not an address at all: never connect to it
  const unmapped = unmapIpv4(plain);
  if (unmapped !== plain) return true; // IPv4-mapped: refused as a form, whatever it maps to
  return family === 4 ? specialUseV4.check(plain, "ipv4") : specialUseV6.check(plain, "ipv6");
}

/** True when an outbound connection to `address`:`port` is permitted. */
export function isAddressPermitted(
  address: string,
  port: number,
  allowlist: PrivateAddressAllowlist,
): boolean {
  return allowlist.allows(address, port) || !isSpecialUseAddress(address);
}
