/**
 * Push or pull per group (docs/architecture.md section 6, docs/delivery-protocol.md section 7), decided
 * on the group's shard.
 *
 * Small or quiet groups are pushed: every message goes to the group's WebSockets and
 * through the fan-out. A group with at least `minMembers` members whose message rate
 * reaches `enterRate` switches to pull mode: its messages are no longer pushed; instead a
 * `tick {groupId, epoch, lastMsgId, mode}` goes out at most once per `tickMs` (the first
 * at once, the next ones coalesced at the end of the interval), and clients read the
 * messages with `GET /groups/{g}/messages?after=`. The group returns to push mode when
 * its rate stayed below `exitRate` (lower than `enterRate`: hysteresis) or its members
 * below `minMembers` for `holdMs`. The rate is an exponentially weighted average with
 * time constant `windowMs` (messages per second).
 *
 * Every switch is announced by a tick carrying the new mode: to pull with the first
 * message not pushed as its lastMsgId, to push with the last message not pushed (the
 * next message is pushed and follows it, so no receiver sees a gap). Mode state lives
 * in memory: after a restart every group starts in push mode.
 */
import { EventEmitter } from 'node:events';
import type { Config } from '../../common/config.js';
import type { DeliveryMode } from '../../common/protocol.js';

export type { DeliveryMode } from '../../common/protocol.js';

export type PullConfig = Config['shard']['delivery']['pull'];

/** What a tick says: the group's head (`lastMsgId` in `epoch`) and its mode from now on. */
export interface Tick {
  groupId: string;
  epoch: string;
  lastMsgId: number;
  mode: DeliveryMode;
}

/**
 * One group's mode with hysteresis; pure (the time comes in). The rate is decayed
 * exponentially: after each message it is `rate * e^(-dt/windowMs) + 1000/windowMs`,
 * which for a steady stream of r messages per second settles at r.
 */
export class ModePolicy {
  private modeNow: DeliveryMode = 'push';
  private rateNow = 0;
  private at: number | undefined;
  /** Since when the group has been below the exit condition (pull mode only). */
  private belowSince: number | undefined;
  private membersNow = 0;

  constructor(private readonly c: Omit<PullConfig, 'tickMs'>) {}

  get mode(): DeliveryMode {
    return this.modeNow;
  }

  /** Messages per second as of `now`. */
  rate(now: number): number {
    this.decay(now);
    return this.rateNow;
  }

  /** A message at `now` in a group of `members`: the mode it is delivered in. */
  message(now: number, members: number): DeliveryMode {
    this.decay(now);
    this.rateNow += 1000 / this.c.windowMs;
    this.membersNow = members;
    return this.evaluate(now);
  }

  /** Re-evaluates without a message, so that a group that went quiet returns to push. */
  check(now: number): DeliveryMode {
    this.decay(now);
    return this.evaluate(now);
  }

  private decay(now: number): void {
    if (this.at !== undefined && now > this.at) this.rateNow *= Math.exp(-(now - this.at) / this.c.windowMs);
    if (this.at === undefined || now > this.at) this.at = now;
  }

  private evaluate(now: number): DeliveryMode {
    const c = this.c;
    const large = c.enabled && this.membersNow >= c.minMembers;
    if (this.modeNow === 'push') {
      if (large && this.rateNow >= c.enterRate) {
        this.modeNow = 'pull';
        this.belowSince = undefined;
      }
      return this.modeNow;
    }
    if (large && this.rateNow >= c.exitRate) {
      this.belowSince = undefined;
      return this.modeNow;
    }
    this.belowSince ??= now;
    if (now - this.belowSince >= c.holdMs) {
      this.modeNow = 'push';
      this.belowSince = undefined;
    }
    return this.modeNow;
  }
}

export interface DeliveryModesOptions {
  pull: PullConfig;
  now?: () => number;
  /** Groups tracked at most (push-mode groups not heard from longest are forgotten first). */
  maxGroups?: number;
}

interface GroupMode {
  groupId: string;
  policy: ModePolicy;
  epoch: string;
  /** The last message committed. */
  lastMsgId: number;
  lastTickAt: number;
  /** A tick due at the end of the current interval (pull mode). */
  timer: NodeJS.Timeout | undefined;
  seenAt: number;
}

/** How often push-mode groups that went quiet are forgotten. */
const FORGET_EVERY_MS = 10_000;

export interface DeliveryModesEvents {
  /** A tick to send to the group's WebSockets and through the fan-out. */
  tick: [Tick];
  /** The group switched mode (metrics, logs). */
  changed: [groupId: string, mode: DeliveryMode];
}

/** The mode of every group of this shard, and the ticks of the groups in pull mode. */
export class DeliveryModes extends EventEmitter<DeliveryModesEvents> {
  private readonly groups = new Map<string, GroupMode>();
  private readonly pulled = new Map<string, GroupMode>();
  private readonly now: () => number;
  private readonly maxGroups: number;
  private readonly sweepTimer: NodeJS.Timeout | undefined;
  private forgotAt = 0;
  private stopped = false;

  constructor(private readonly o: DeliveryModesOptions) {
    super();
    this.now = o.now ?? Date.now;
    this.maxGroups = o.maxGroups ?? 100_000;
    if (o.pull.enabled) {
      this.sweepTimer = setInterval(() => this.sweep(), o.pull.tickMs);
      this.sweepTimer.unref();
    }
  }

  /** The group's delivery mode now. */
  modeOf(groupId: string): DeliveryMode {
    return this.pulled.has(groupId) ? 'pull' : 'push';
  }

  /** Groups in pull mode now. */
  get pulling(): number {
    return this.pulled.size;
  }

  /**
   * A message was committed (called in commit order, for every message): true when it
   * is to be pushed, false when a tick announces it. A switch is announced first.
   */
  published(
    m: { groupId: string; msgId: number; prevMsgId: number; epoch: string },
    members: number,
  ): boolean {
    if (!this.o.pull.enabled || this.stopped) return true;
    const now = this.now();
    let st = this.groups.get(m.groupId);
    if (st) {
      // Most recently heard from last (Map order): the oldest are forgotten first.
      this.groups.delete(m.groupId);
    } else {
      st = {
        groupId: m.groupId,
        policy: new ModePolicy(this.o.pull),
        epoch: m.epoch,
        lastMsgId: m.prevMsgId,
        lastTickAt: Number.NEGATIVE_INFINITY,
        timer: undefined,
        seenAt: now,
      };
    }
    this.groups.set(m.groupId, st);
    st.seenAt = now;
    st.epoch = m.epoch;
    const before = st.policy.mode;
    const mode = st.policy.message(now, members);
    if (before === 'push' && mode === 'pull') {
      st.lastMsgId = m.msgId;
      this.pulled.set(m.groupId, st);
      this.emit('changed', m.groupId, 'pull');
      this.announce(st, 'pull');
      this.limit();
      return false;
    }
    if (before === 'pull' && mode === 'push') {
      // Everything up to the previous message was announced by ticks (this one says the
      // rest); this message is pushed and follows it.
      st.lastMsgId = m.prevMsgId;
      this.leavePull(st);
      st.lastMsgId = m.msgId;
      return true;
    }
    st.lastMsgId = m.msgId;
    if (mode === 'push') {
      this.limit();
      return true;
    }
    this.schedule(st);
    return false;
  }

  /** A tick now if the interval since the last one is over, else one at its end (coalesced). */
  private schedule(st: GroupMode): void {
    if (st.timer) return;
    const wait = st.lastTickAt + this.o.pull.tickMs - this.now();
    if (wait <= 0) {
      this.announce(st, 'pull');
      return;
    }
    st.timer = setTimeout(() => {
      st.timer = undefined;
      if (!this.stopped && this.pulled.get(st.groupId) === st) this.announce(st, 'pull');
    }, wait);
    st.timer.unref();
  }

  private announce(st: GroupMode, mode: DeliveryMode): void {
    if (st.timer) clearTimeout(st.timer);
    st.timer = undefined;
    st.lastTickAt = this.now();
    this.emit('tick', { groupId: st.groupId, epoch: st.epoch, lastMsgId: st.lastMsgId, mode });
  }

  private leavePull(st: GroupMode): void {
    this.pulled.delete(st.groupId);
    this.emit('changed', st.groupId, 'push');
    this.announce(st, 'push');
  }

  /** Groups in pull mode that went quiet go back to push (announced with their head). */
  private sweep(): void {
    if (this.stopped) return;
    const now = this.now();
    for (const st of [...this.pulled.values()]) if (st.policy.check(now) === 'push') this.leavePull(st);
    if (now - this.forgotAt >= FORGET_EVERY_MS) {
      this.forgotAt = now;
      // A push-mode group not heard from for 5 time constants has a rate of < 1 % of its last.
      const quiet = now - 5 * this.o.pull.windowMs;
      for (const [g, st] of this.groups)
        if (st.policy.mode === 'push' && st.seenAt < quiet) this.groups.delete(g);
    }
  }

  /** Bounds the groups tracked: the push-mode groups heard from longest ago go first. */
  private limit(): void {
    if (this.groups.size <= this.maxGroups) return;
    for (const [g, st] of this.groups) {
      if (this.groups.size <= this.maxGroups) break;
      if (st.policy.mode === 'push') this.groups.delete(g);
    }
  }

  stop(): void {
    this.stopped = true;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    for (const st of this.pulled.values()) if (st.timer) clearTimeout(st.timer);
  }
}
