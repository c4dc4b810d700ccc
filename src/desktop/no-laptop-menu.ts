// What the stick's stiefelOS offers when no laptop answered: keep looking,
// boot an ISO (the config's, a typed URL, one on a USB disk), or a rescue
// shell. One screen of at most 25 lines of at most 80 columns, chosen with
// the keyboard alone (a digit or letter, then Enter). Pure: the text and
// the choice; the client command does what was chosen.

export type MenuChoice =
  | { kind: 'look' }
  | { kind: 'iso'; url: string; sha256?: string; sums?: string }
  | { kind: 'url' }
  | { kind: 'usb' }
  | { kind: 'shell' };

export interface MenuItem {
  key: string;
  label: string;
  choice: MenuChoice;
}

const WIDTH = 80;
/** Lines left for the config's ISOs once the heading, the fixed items and the prompt are drawn. */
const MAX_ISO_ITEMS = 17;

/** 'URL', 'URL sha256:HEX' or 'URL sums:SUMS' (config client.isos) as a choice. */
export function isoItem(text: string): { url: string; sha256?: string; sums?: string } {
  const [url, check] = text.trim().split(/\s+/);
  if (check?.startsWith('sha256:')) return { url: url!, sha256: check.slice('sha256:'.length).toLowerCase() };
  if (check?.startsWith('sums:')) return { url: url!, sums: check.slice('sums:'.length) };
  return { url: url! };
}

function fit(text: string, width: number): string {
  return text.length <= width ? text : `${text.slice(0, width - 1)}…`;
}

/** The items in order: 1 keeps looking, 2.. the config's ISOs, then u, f, s. */
export function menuItems(isos: readonly string[]): MenuItem[] {
  const items: MenuItem[] = [{ key: '1', label: 'keep looking for the laptop', choice: { kind: 'look' } }];
  isos.slice(0, MAX_ISO_ITEMS).forEach((text, i) => {
    const iso = isoItem(text);
    items.push({ key: String(i + 2), label: `boot ${iso.url}`, choice: { kind: 'iso', ...iso } });
  });
  items.push(
    { key: 'u', label: 'boot an ISO from a URL (typed here)', choice: { kind: 'url' } },
    { key: 'f', label: 'boot an ISO file from a USB disk', choice: { kind: 'usb' } },
    { key: 's', label: 'rescue shell', choice: { kind: 'shell' } },
  );
  return items;
}

/** The screen: why it is shown, then one line per item, each within 80 columns. */
export function menuText(why: string, items: readonly MenuItem[]): string {
  const lines = [fit(why, WIDTH), ''];
  for (const item of items) lines.push(fit(`  ${item.key.padStart(2)}  ${item.label}`, WIDTH));
  return lines.join('\n');
}

/** The item for what was typed (case and spaces aside); undefined for anything else. */
export function parseChoice(typed: string, items: readonly MenuItem[]): MenuChoice | undefined {
  const key = typed.trim().toLowerCase();
  return items.find((i) => i.key === key)?.choice;
}
