import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isValidQuestion, passphraseProvider, QuestionChannel, QuestionError } from '../../src/payload/questions';

test('a question waits for its answer; next() hands it out until answered', async () => {
  const ch = new QuestionChannel();
  assert.equal(await ch.next(0), undefined);
  const pp = passphraseProvider(ch);
  assert.equal(pp.attempts, 3);
  // The question as boot-entry discovery (src/disk/luks.ts) asks it.
  const answer = pp.ask('Passphrase for the encrypted /dev/nvme0n1p3 (cryptboot): ', { attempt: 1, attempts: 3 });
  const q = await ch.next(1000);
  assert.ok(q && isValidQuestion(q));
  assert.equal(q.kind, 'passphrase');
  assert.equal(q.prompt, 'Passphrase for the encrypted /dev/nvme0n1p3 (cryptboot)');
  assert.deepEqual(await ch.next(0), q, 'handed out again until answered');
  assert.equal(ch.answer('0'.repeat(32), 'x'), false);
  assert.equal(ch.answer(q.id, 'hunter2'), true);
  assert.equal(await answer, 'hunter2');
  assert.equal(await ch.next(0), undefined);
  assert.equal(ch.answer(q.id, 'again'), false);
});

test('a long poll wakes up when a question is asked', async () => {
  const ch = new QuestionChannel();
  const poll = ch.next(5000);
  const t0 = Date.now();
  setTimeout(() => void ch.ask({ kind: 'text', prompt: 'which entry?' }).catch(() => undefined), 50);
  const q = await poll;
  assert.equal(q?.prompt, 'which entry?');
  assert.ok(Date.now() - t0 < 2000);
  ch.close(new QuestionError('done'));
});

test('refusal, timeout, withdrawal and close reject the asker', async () => {
  const ch = new QuestionChannel();
  const a = ch.ask({ kind: 'passphrase', prompt: 'p' });
  const q = (await ch.next(0))!;
  ch.refuse(q.id, 'no terminal');
  await assert.rejects(a, (e: Error) => e instanceof QuestionError && /could not answer 'p': no terminal/.test(e.message));
  await assert.rejects(ch.ask({ kind: 'text', prompt: 't' }, { timeoutMs: 20 }), /nobody answered 't'/);
  const ac = new AbortController();
  const w = ch.ask({ kind: 'text', prompt: 'w' }, { signal: ac.signal });
  ac.abort();
  await assert.rejects(w, /withdrawn/);
  const c = ch.ask({ kind: 'confirm', prompt: 'c' });
  ch.close(new QuestionError('the desktop went away'));
  await assert.rejects(c, /went away/);
  await assert.rejects(ch.ask({ kind: 'text', prompt: 'late' }), /went away/);
  assert.equal(ch.openQuestions, 0);
});

test('prompts are one printable line; malformed questions are recognised', () => {
  const ch = new QuestionChannel();
  void ch.ask({ kind: 'text', prompt: 'a\nb\x1b[2Jc' }).catch(() => undefined);
  return ch.next(0).then((q) => {
    assert.equal(q?.prompt, 'a b [2Jc');
    assert.ok(!isValidQuestion({ id: 'x', kind: 'text', prompt: 'p' }));
    assert.ok(!isValidQuestion({ id: '0'.repeat(32), kind: 'shell', prompt: 'p' }));
    assert.ok(!isValidQuestion({ id: '0'.repeat(32), kind: 'text', prompt: 'a\x07' }));
    ch.close(new QuestionError('end'));
  });
});
