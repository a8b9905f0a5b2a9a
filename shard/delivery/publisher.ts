/**
 * What happens to committed messages (the store's `committed` event, in commit order):
 * each is pushed to the group's WebSockets on this shard and, through the fan-out, to
 * its members' session hosts, or, for a group in pull mode, announced by a tick
 * (docs/delivery-protocol.md sections 2 and 7). The messages of one commit reach each
 * WebSocket in one write.
 */
import type { Message } from '../../common/protocol.js';
import { gathering } from '../sockets/gathering.js';
import type { Fanout } from './fanout.js';
import type { MemberCache } from './member-cache.js';
import type { DeliveryModes, Tick } from './modes.js';

/** The group WebSockets of this shard, as delivery sees them. */
export interface GroupSockets {
  publish(m: Message): void;
  tick(t: Tick): void;
}

export class Publisher {
  constructor(
    private readonly modes: DeliveryModes,
    private readonly sockets: GroupSockets,
    private readonly fanout: Fanout,
    private readonly members: MemberCache,
  ) {
    modes.on('tick', (t) => {
      sockets.tick(t);
      fanout.tick(t);
    });
  }

  committed(messages: readonly Message[]): void {
    gathering.run(() => {
      for (const m of messages) {
        if (!this.modes.published(m, this.memberCount(m.groupId))) continue;
        this.sockets.publish(m);
        this.fanout.published(m);
      }
    });
  }

  private memberCount(groupId: string): number {
    try {
      let n = 0;
      for (const list of this.members.byHost(groupId).values()) n += list.length;
      return n;
    } catch {
      return 0;
    }
  }
}
