import type { Command } from 'commander';
import { UsageError } from '../options.js';

/**
 * `imgsearch completion bash|zsh`: a completion script generated from the commands and flags
 * registered here (so it never falls behind). Install: `source <(imgsearch completion bash)`.
 */
export function registerCompletionCommand(program: Command): void {
  program
    .command('completion')
    .argument('<shell>', 'bash or zsh')
    .description('print a shell completion script: source <(imgsearch completion bash)')
    .action((shell: string) => {
      if (shell !== 'bash' && shell !== 'zsh') throw new UsageError(`unknown shell ${shell}: use bash or zsh`);
      process.stdout.write(completionScript(program, shell));
    });
}

/** Each command path (e.g. `model promote`) with its flags, the root's flags under ''. */
export function commandTable(program: Command): Map<string, string[]> {
  const table = new Map<string, string[]>();
  const walk = (cmd: Command, prefix: string) => {
    const flags = cmd.options.map((o) => o.long ?? o.short).filter((f): f is string => Boolean(f));
    table.set(prefix, [...flags, ...cmd.commands.map((c) => c.name()), '--help']);
    for (const sub of cmd.commands) walk(sub, prefix ? `${prefix} ${sub.name()}` : sub.name());
  };
  walk(program, '');
  return table;
}

function completionScript(program: Command, shell: 'bash' | 'zsh'): string {
  const cases = [...commandTable(program)].map(([path, words]) => `    "${path}") words="${words.join(' ')}" ;;`).join('\n');
  const fn = `_imgsearch_complete() {
  local cur path="" w i
  cur="\${COMP_WORDS[COMP_CWORD]}"
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="\${COMP_WORDS[i]}"
    [[ "$w" == -* ]] && continue
    case "\${path:+$path }$w" in
${[...commandTable(program).keys()]
  .filter(Boolean)
  .map((p) => `      "${p}") path="${p}" ;;`)
  .join('\n')}
    esac
  done
  local words=""
  case "$path" in
${cases}
  esac
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
  [[ \${#COMPREPLY[@]} -eq 0 ]] && COMPREPLY=($(compgen -f -- "$cur"))
}
`;
  if (shell === 'zsh') return `autoload -U +X bashcompinit && bashcompinit\n${fn}complete -F _imgsearch_complete imgsearch\n`;
  return `${fn}complete -F _imgsearch_complete imgsearch\n`;
}
