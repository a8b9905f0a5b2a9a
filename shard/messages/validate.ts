/**
 * What a message must be, checked in one place for every way a message comes in:
 * `contents` 1 to `shard.limits.maxMessageBytes` bytes of text that is not only white
 * space, and a `clientMsgId` (the idempotency key) of 1 to 128 of A-Z a-z 0-9 . _ : -.
 */
import { badRequest } from '../../common/http-answers.js';
import { isClientMsgId } from '../../common/protocol.js';

export interface MessageInput {
  contents: string;
  clientMsgId: string;
}

/** The message's fields, or 400 `bad_field` saying what is wrong. */
export function checkMessage(contents: unknown, clientMsgId: unknown, maxMessageBytes: number): MessageInput {
  if (typeof contents !== 'string' || contents.trim() === '' || Buffer.byteLength(contents) > maxMessageBytes)
    throw badRequest('bad_field', `contents must be 1 to ${maxMessageBytes} bytes of text`);
  if (!isClientMsgId(clientMsgId))
    throw badRequest('bad_field', 'clientMsgId must be 1 to 128 of A-Z a-z 0-9 . _ : -');
  return { contents, clientMsgId };
}
