/** Command-line option values: usage errors that name the option and say what it wants. */

/** A mistake in the command line: `shardchat` prints it and exits 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** The value of a required option; when it is missing, a usage error naming it and what it wants. */
export function required(name: string, value: string | undefined, what: string): string {
  if (value === undefined) throw new UsageError(`--${name} is required (${what})`);
  return value;
}

/** A positive whole number given as an option's value. */
export function positiveWholeNumber(name: string, value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isInteger(n) || n < 1)
    throw new UsageError(`--${name} wants a positive whole number, got ${JSON.stringify(value)}`);
  return n;
}

/** A required option that is a positive whole number (`--to is required (a positive whole number)`). */
export function requiredPositiveWholeNumber(name: string, value: string | undefined): number {
  return positiveWholeNumber(name, required(name, value, 'a positive whole number'));
}
