// A lexer and parser for GRUB 2's scripting language (grub.cfg), producing a
// small syntax tree that src/boot-entries/grub.ts evaluates. Pure; never
// throws: a syntax error becomes a `SyntaxIssue` and parsing resumes at the
// next line.
//
// GRUB's language is shell-like ("Shell-like scripting" in the GRUB manual):
// words separated by blanks; ';' and newlines end commands; '{' and '}' delimit
// the bodies of `menuentry`, `submenu` and `function`; '#' starts a comment at
// the start of a word; '...' quotes literally, "..." allows $variables and
// backslash escapes; $name, ${name}, $1, $#, $? expand variables; if/then/
// elif/else/fi, while/until/do/done and for/in/do/done are reserved words.

/** One piece of a word: literal text, or a variable to expand. */
export type WordPart = { text: string; quoted: boolean } | { variable: string; quoted: boolean };
export type Word = WordPart[];

export type Statement =
  | { kind: 'command'; words: Word[]; line: number }
  | { kind: 'if'; clauses: { condition: Statement[]; body: Statement[] }[]; otherwise: Statement[] | null; line: number; text: string }
  | { kind: 'loop'; line: number; text: string; body: Statement[] }
  | { kind: 'function'; name: string; body: Statement[]; line: number }
  | { kind: 'menu'; type: 'menuentry' | 'submenu'; args: Word[]; body: Statement[]; line: number };

export interface SyntaxIssue {
  line: number;
  message: string;
}

type Token =
  | { t: 'word'; word: Word; raw: string; line: number }
  | { t: 'nl'; line: number }
  | { t: 'semi'; line: number }
  | { t: 'lbrace'; line: number }
  | { t: 'rbrace'; line: number }
  | { t: 'eof'; line: number };

const BLANK = /[ \t\r\f\v]/;
const NAME_START = /[A-Za-z_]/;
const NAME_CHAR = /[A-Za-z0-9_]/;

/** Splits grub.cfg into tokens. Unterminated quotes end at the end of input (reported). */
export function tokenize(src: string, issues: SyntaxIssue[]): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  let line = 1;
  const n = src.length;
  while (i < n) {
    const c = src[i]!;
    if (c === '\n') {
      tokens.push({ t: 'nl', line });
      line++;
      i++;
      continue;
    }
    if (BLANK.test(c)) {
      i++;
      continue;
    }
    if (c === '#') {
      while (i < n && src[i] !== '\n') i++;
      continue;
    }
    if (c === ';') {
      tokens.push({ t: 'semi', line });
      i++;
      continue;
    }
    if (c === '{') {
      tokens.push({ t: 'lbrace', line });
      i++;
      continue;
    }
    if (c === '}') {
      tokens.push({ t: 'rbrace', line });
      i++;
      continue;
    }
    // A word: runs until a blank, newline, ';', '{' or '}' outside quotes.
    const word: Word = [];
    const startLine = line;
    const start = i;
    const pushText = (text: string, quoted: boolean): void => {
      const last = word[word.length - 1];
      if (last && 'text' in last && last.quoted === quoted) last.text += text;
      else word.push({ text, quoted });
    };
    const readVariable = (quoted: boolean): void => {
      // at '$'
      const next = src[i + 1];
      if (next === '{') {
        const end = src.indexOf('}', i + 2);
        if (end < 0) {
          issues.push({ line, message: 'unterminated ${' });
          pushText('$', quoted);
          i++;
          return;
        }
        word.push({ variable: src.slice(i + 2, end), quoted });
        i = end + 1;
        return;
      }
      if (next !== undefined && (NAME_START.test(next) || /[0-9?#@*]/.test(next))) {
        let j = i + 1;
        if (NAME_START.test(next)) while (j < n && NAME_CHAR.test(src[j]!)) j++;
        else if (/[0-9]/.test(next)) while (j < n && /[0-9]/.test(src[j]!)) j++;
        else j++;
        word.push({ variable: src.slice(i + 1, j), quoted });
        i = j;
        return;
      }
      pushText('$', quoted);
      i++;
    };
    while (i < n) {
      const ch = src[i]!;
      if (BLANK.test(ch) || ch === '\n' || ch === ';' || ch === '{' || ch === '}') break;
      if (ch === "'") {
        const end = src.indexOf("'", i + 1);
        const stop = end < 0 ? n : end;
        if (end < 0) issues.push({ line, message: "unterminated '" });
        const text = src.slice(i + 1, stop);
        line += text.split('\n').length - 1;
        pushText(text, true);
        i = stop + 1;
        continue;
      }
      if (ch === '"') {
        i++;
        let closed = false;
        while (i < n) {
          const d = src[i]!;
          if (d === '"') {
            closed = true;
            i++;
            break;
          }
          if (d === '\\' && i + 1 < n && /[\\"$\n]/.test(src[i + 1]!)) {
            if (src[i + 1] === '\n') line++;
            else pushText(src[i + 1]!, true);
            i += 2;
            continue;
          }
          if (d === '$') {
            readVariable(true);
            continue;
          }
          if (d === '\n') line++;
          pushText(d, true);
          i++;
        }
        if (!closed) issues.push({ line, message: 'unterminated "' });
        if (word.length === 0) word.push({ text: '', quoted: true });
        continue;
      }
      if (ch === '\\') {
        if (i + 1 < n) {
          if (src[i + 1] === '\n') line++;
          else pushText(src[i + 1]!, true);
          i += 2;
        } else i++;
        continue;
      }
      if (ch === '$') {
        readVariable(false);
        continue;
      }
      pushText(ch, false);
      i++;
    }
    tokens.push({ t: 'word', word, raw: src.slice(start, i), line: startLine });
  }
  tokens.push({ t: 'eof', line });
  return tokens;
}

/** The literal text of a word when it has no variables, else null. */
export function literal(word: Word | undefined): string | null {
  if (!word) return null;
  let s = '';
  for (const p of word) {
    if ('variable' in p) return null;
    s += p.text;
  }
  return s;
}

const unquotedLiteral = (word: Word): string | null => (word.length === 1 && 'text' in word[0]! && !word[0].quoted ? word[0].text : null);

const RESERVED_END = new Set(['then', 'elif', 'else', 'fi', 'do', 'done']);

class Parser {
  pos = 0;
  depth = 0;
  constructor(
    readonly tokens: Token[],
    readonly src: string,
    readonly issues: SyntaxIssue[],
  ) {}

  peek(): Token {
    return this.tokens[this.pos]!;
  }
  next(): Token {
    const t = this.tokens[this.pos]!;
    if (t.t !== 'eof') this.pos++;
    return t;
  }
  skipSeparators(): void {
    while (this.peek().t === 'nl' || this.peek().t === 'semi') this.next();
  }
  peekKeyword(): string | null {
    const t = this.peek();
    return t.t === 'word' ? unquotedLiteral(t.word) : null;
  }
  lineText(line: number): string {
    return (this.src.split('\n')[line - 1] ?? '').trim();
  }

  /** Statements until one of `stops` (a reserved word) or '}' or EOF. */
  parseList(stops: ReadonlySet<string>, inBraces: boolean): Statement[] {
    const out: Statement[] = [];
    this.depth++;
    if (this.depth > 64) {
      this.issues.push({ line: this.peek().line, message: 'nesting too deep' });
      this.depth--;
      // Skip everything: the rest cannot be evaluated safely.
      while (this.peek().t !== 'eof') this.next();
      return out;
    }
    for (;;) {
      this.skipSeparators();
      const t = this.peek();
      if (t.t === 'eof') break;
      if (t.t === 'rbrace') {
        if (inBraces) break;
        this.issues.push({ line: t.line, message: "unexpected '}'" });
        this.next();
        continue;
      }
      const kw = this.peekKeyword();
      if (kw !== null && stops.has(kw)) break;
      if (kw !== null && RESERVED_END.has(kw)) {
        this.issues.push({ line: t.line, message: `unexpected '${kw}'` });
        this.next();
        continue;
      }
      const st = this.parseStatement();
      if (st) out.push(st);
    }
    this.depth--;
    return out;
  }

  expectKeyword(kw: string): boolean {
    this.skipSeparators();
    if (this.peekKeyword() === kw) {
      this.next();
      return true;
    }
    this.issues.push({ line: this.peek().line, message: `expected '${kw}'` });
    return false;
  }

  parseBlock(): Statement[] | null {
    // Accept newlines before '{' (GRUB allows `menuentry 'x'\n{`).
    while (this.peek().t === 'nl') this.next();
    if (this.peek().t !== 'lbrace') {
      this.issues.push({ line: this.peek().line, message: "expected '{'" });
      return null;
    }
    this.next();
    const body = this.parseList(new Set(), true);
    if (this.peek().t === 'rbrace') this.next();
    else this.issues.push({ line: this.peek().line, message: "missing '}'" });
    return body;
  }

  parseStatement(): Statement | null {
    const first = this.peek();
    if (first.t !== 'word') {
      this.next();
      return null;
    }
    const kw = unquotedLiteral(first.word);
    const line = first.line;
    if (kw === 'if') {
      this.next();
      const clauses: { condition: Statement[]; body: Statement[] }[] = [];
      let otherwise: Statement[] | null = null;
      const condition = this.parseList(new Set(['then']), false);
      this.expectKeyword('then');
      const body = this.parseList(new Set(['elif', 'else', 'fi']), false);
      clauses.push({ condition, body });
      for (;;) {
        const k = this.peekKeyword();
        if (k === 'elif') {
          this.next();
          const c = this.parseList(new Set(['then']), false);
          this.expectKeyword('then');
          clauses.push({ condition: c, body: this.parseList(new Set(['elif', 'else', 'fi']), false) });
          continue;
        }
        if (k === 'else') {
          this.next();
          otherwise = this.parseList(new Set(['fi']), false);
        }
        break;
      }
      this.expectKeyword('fi');
      return { kind: 'if', clauses, otherwise, line, text: this.lineText(line) };
    }
    if (kw === 'while' || kw === 'until' || kw === 'for') {
      this.next();
      const head = this.parseList(new Set(['do']), false);
      this.expectKeyword('do');
      const body = this.parseList(new Set(['done']), false);
      this.expectKeyword('done');
      return { kind: 'loop', line, text: this.lineText(line), body: [...head, ...body] };
    }
    if (kw === 'function') {
      this.next();
      const nameTok = this.next();
      const name = nameTok.t === 'word' ? (literal(nameTok.word) ?? '') : '';
      const body = this.parseBlock() ?? [];
      if (!name) this.issues.push({ line, message: 'function without a name' });
      return { kind: 'function', name, body, line };
    }
    if (kw === 'menuentry' || kw === 'submenu') {
      this.next();
      const args: Word[] = [];
      while (this.peek().t === 'word') args.push((this.next() as { word: Word }).word);
      const body = this.parseBlock() ?? [];
      return { kind: 'menu', type: kw, args, body, line };
    }
    const words: Word[] = [];
    while (this.peek().t === 'word') words.push((this.next() as { word: Word }).word);
    // A stray '{' after a command (e.g. "load_video {"): GRUB would fail; skip the block.
    if (this.peek().t === 'lbrace') {
      this.issues.push({ line: this.peek().line, message: "unexpected '{'" });
      this.parseBlock();
    }
    return { kind: 'command', words, line };
  }
}

export function parseGrubScript(src: string): { statements: Statement[]; issues: SyntaxIssue[] } {
  const issues: SyntaxIssue[] = [];
  const tokens = tokenize(src, issues);
  const parser = new Parser(tokens, src, issues);
  const statements = parser.parseList(new Set(), false);
  while (parser.peek().t !== 'eof') {
    const t = parser.next();
    issues.push({ line: t.line, message: 'unexpected input' });
    statements.push(...parser.parseList(new Set(), false));
  }
  return { statements, issues };
}
