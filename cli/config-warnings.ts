/**
 * Configurations that are valid but most likely not what was meant: `--check-config`
 * prints these as warnings (exit 0), `explain` lists them, the router and shard log them.
 */
import type { Config } from '../common/config.js';

/** How many capture groups (named or not) a valid pattern has. */
export function captureGroups(pattern: string): number {
  // An empty alternative always matches: the result has one slot per group.
  return (new RegExp(`(?:${pattern})|`).exec('') as RegExpExecArray).length - 1;
}

/** The pattern with its first path segment class ([^/]+ or [^\/]+) made the key's group, if it has one. */
export function withKeyGroup(pattern: string): string | undefined {
  const m = /\[\^\\?\/\][+*]/.exec(pattern);
  if (!m) return undefined;
  const candidate = `${pattern.slice(0, m.index)}(${m[0]})${pattern.slice(m.index + m[0].length)}`;
  try {
    return captureGroups(candidate) === 1 ? candidate : undefined;
  } catch {
    return undefined;
  }
}

const EXAMPLE_PATTERN = '^/(?:groups|users)/([^/]+)';

/** A urlPattern without a capture group: no key ever comes from the path. */
function patternWithoutGroup(cfg: Config): string | undefined {
  const { urlPattern, onNoMatch, header } = cfg.shardSpec;
  if (captureGroups(urlPattern) > 0) return undefined;
  const unlessHeader = header ? ` without the ${header} header` : '';
  const consequence =
    onNoMatch === 'path'
      ? "every path is hashed whole (onNoMatch: path), spreading one group's routes (/groups/g, /groups/g/messages) over the shards"
      : onNoMatch === 'reject'
        ? `every request${unlessHeader} is refused with 404 (onNoMatch: reject)`
        : `every request${unlessHeader} goes to shard ${onNoMatch} (onNoMatch: ${onNoMatch})`;
  const suggestion = withKeyGroup(urlPattern) ?? EXAMPLE_PATTERN;
  return (
    `shardSpec.urlPattern ${JSON.stringify(urlPattern)} has no capture group (group 1 or a named group key), ` +
    `so no key comes from the path: ${consequence}; put the key in a group, ` +
    `e.g. ${JSON.stringify(suggestion)} or (?<key>[^/]+)`
  );
}

/** Warnings about a valid configuration, in words for people; empty when there is nothing to say. */
export function configWarnings(cfg: Config): string[] {
  const out: string[] = [];
  const w = patternWithoutGroup(cfg);
  if (w) out.push(w);
  return out;
}
