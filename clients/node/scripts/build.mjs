// Builds dist/ (the compiled client and its type declarations) with the
// TypeScript compiler of devDependencies. It is the package's `prepare`
// step, so `npm install ./clients/node` (which links the folder and runs
// prepare, but installs no devDependencies for it) and `npm pack` both get
// dist/ without a manual build; when the compiler is not installed yet it
// is installed first, as package-lock.json pins it.
import { existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
if (!existsSync(tsc)) {
  console.error('stepup-agent-client: installing the TypeScript compiler (devDependencies) to build dist/');
  const npm = process.env.npm_execpath ? [process.execPath, [process.env.npm_execpath]] : ['npm', []];
  execFileSync(npm[0], [...npm[1], 'ci', '--ignore-scripts', '--no-audit', '--no-fund'], { cwd: root, stdio: 'inherit' });
}
execFileSync(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: root, stdio: 'inherit' });
