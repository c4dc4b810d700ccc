// firstAnswer(): in server mode the LUKS passphrase is asked on the desktop
// (the real QuestionChannel of the payload server) and on the laptop's
// console at once; the first answer wins and the other question is
// withdrawn. The console is a stand-in honouring the abort signal the way
// consolePassphraseProvider does (a raw-mode terminal cannot be driven here
// without a pty).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StiefelError } from '../../src/errors';
import { silentLogger } from '../../src/log';
import { CleanupStack } from '../../src/disk/cleanup';
import { openLuks } from '../../src/disk/luks';
import { firstAnswer, type PassphraseProvider } from '../../src/disk/passphrase';
import { passphraseProvider, QuestionChannel } from '../../src/payload/questions';
import type { CommandRunner } from '../../src/disk/runner';

/** A console that answers `answer` after `afterMs` (never when null) and records being withdrawn. */
function fakeConsole(answer: string | null, afterMs = 0): PassphraseProvider & { asked: string[]; withdrawn: number } {
  const c = {
    attempts: 3,
    asked: [] as string[],
    withdrawn: 0,
    ask(question: string, details: { signal?: AbortSignal | undefined }): Promise<string> {
      c.asked.push(question);
      return new Promise<string>((resolve, reject) => {
        const timer = answer === null ? undefined : setTimeout(() => resolve(answer), afterMs);
        details.signal?.addEventListener(
          'abort',
          () => {
            clearTimeout(timer);
            c.withdrawn++;
            reject(new StiefelError('E_INTERRUPTED', 'interrupted while asking for the passphrase'));
          },
          { once: true },
        );
      });
    },
  };
  return c;
}

const noTerminal: PassphraseProvider = {
  ask: () => Promise.reject(new StiefelError('E_LUKS_NO_PASSPHRASE', 'no terminal to ask on')),
};

test('the desktop answers first: its answer wins and the console question is withdrawn', async () => {
  const channel = new QuestionChannel();
  const console_ = fakeConsole(null);
  const both = firstAnswer([passphraseProvider(channel), console_]);
  assert.equal(both.attempts, 3);
  const answer = both.ask('Passphrase for the encrypted /dev/vda2: ', { attempt: 1, attempts: 3 });
  const q = await channel.next(1000);
  assert.ok(q, 'the desktop got the question');
  assert.equal(q.kind, 'passphrase');
  assert.equal(q.prompt, 'Passphrase for the encrypted /dev/vda2');
  assert.deepEqual(console_.asked, ['Passphrase for the encrypted /dev/vda2: ']);
  assert.equal(channel.answer(q.id, 'from the desktop'), true);
  assert.equal(await answer, 'from the desktop');
  assert.equal(console_.withdrawn, 1);
});

test('the console answers first: its answer wins and the desktop question is withdrawn', async () => {
  const channel = new QuestionChannel();
  const both = firstAnswer([passphraseProvider(channel), fakeConsole('from the console', 5)]);
  const answer = both.ask('Passphrase for the encrypted /dev/vda2: ', { attempt: 1, attempts: 3 });
  const q = await channel.next(1000);
  assert.ok(q);
  assert.equal(await answer, 'from the console');
  assert.equal(channel.openQuestions, 0, 'the desktop no longer sees the question');
  assert.equal(channel.answer(q.id, 'late'), false, 'a late answer from the desktop goes nowhere');
});

test('a console that cannot ask (no terminal) leaves the desktop to answer', async () => {
  const channel = new QuestionChannel();
  const both = firstAnswer([passphraseProvider(channel), noTerminal]);
  const answer = both.ask('Passphrase: ', { attempt: 1, attempts: 3 });
  const q = await channel.next(1000);
  assert.ok(q);
  channel.answer(q.id, 'pw');
  assert.equal(await answer, 'pw');
});

test('when every side gives up, the first (the desktop) error is the one reported', async () => {
  const channel = new QuestionChannel();
  const both = firstAnswer([passphraseProvider(channel), noTerminal]);
  const answer = both.ask('Passphrase: ', { attempt: 1, attempts: 3 });
  const q = await channel.next(1000);
  assert.ok(q);
  channel.refuse(q.id, 'no terminal on the desktop');
  await assert.rejects(answer, /the desktop could not answer 'Passphrase': no terminal on the desktop/);
});

test("the caller's signal withdraws both questions", async () => {
  const channel = new QuestionChannel();
  const console_ = fakeConsole(null);
  const ac = new AbortController();
  const answer = firstAnswer([passphraseProvider(channel), console_]).ask('Passphrase: ', { attempt: 1, attempts: 3, signal: ac.signal });
  assert.ok(await channel.next(1000));
  ac.abort(new StiefelError('E_SESSION_ENDED', 'the desktop went away'));
  await assert.rejects(answer, /withdrawn/);
  assert.equal(channel.openQuestions, 0);
  assert.equal(console_.withdrawn, 1);
});

test('with openLuks: a wrong answer, then the right one from the desktop; each attempt asks the console anew and withdraws it', async () => {
  const channel = new QuestionChannel();
  const console_ = fakeConsole(null);
  const calls: string[] = [];
  const runner: CommandRunner = {
    async run(file, args, options = {}) {
      calls.push(String(options.input));
      return { code: options.input === 'right' ? 0 : 2, stdout: '', stderr: '' };
    },
  };
  const cleanup = new CleanupStack(silentLogger);
  const opened = openLuks('/dev/loop0', { runner, cleanup, passphrase: firstAnswer([passphraseProvider(channel), console_]), name: 'stf4-luks-1', label: '/dev/vda2' });
  const q1 = await channel.next(1000);
  assert.ok(q1);
  channel.answer(q1.id, 'wrong');
  const q2 = await channel.next(1000);
  assert.ok(q2);
  assert.notEqual(q2.id, q1.id);
  assert.match(q2.prompt, /^Wrong passphrase, try again \(2 of 3\)/);
  channel.answer(q2.id, 'right');
  assert.equal(await opened, '/dev/mapper/stf4-luks-1');
  assert.deepEqual(calls, ['wrong', 'right']);
  assert.equal(console_.withdrawn, 2, 'the console question was withdrawn after each desktop answer');
  assert.deepEqual(console_.asked, ['Passphrase for the encrypted /dev/vda2: ', 'Wrong passphrase, try again (2 of 3) for /dev/vda2: ']);
  await cleanup.run();
});
