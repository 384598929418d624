/** Reading the README's code blocks, for the tests that check or run them. */

/** The ```ts blocks of a Markdown text, with the line each starts on. */
export function tsBlocks (markdown: string): Array<{ line: number, code: string }> {
  const blocks: Array<{ line: number, code: string }> = []
  const fence = /^( *)```ts[ \t]*\n([\s\S]*?)^\1```[ \t]*$/gm
  for (let m = fence.exec(markdown); m !== null; m = fence.exec(markdown)) {
    const indent = m[1].length
    const code = m[2].split('\n').map(l => l.slice(Math.min(indent, l.length - l.trimStart().length))).join('\n')
    blocks.push({ line: markdown.slice(0, m.index).split('\n').length + 1, code })
  }
  return blocks
}
