// The collection map's worker thread: PCA, k-means, silhouette and UMAP run here, off the event
// loop, so searches keep answering while a map is computed. Worker threads do not inherit the
// TypeScript loader (see model/inference-worker.mjs). From the sources (`imgsearch up`), the body
// is TypeScript beside this file: register tsx as bin/imgsearch.mjs does, then run it. In a
// deployable's bundle (infra/packaging.ts bundles this file next to the program), esbuild has
// inlined the body and there is no .ts file: tsx is neither needed nor shipped, so its name is
// built at run time where esbuild does not follow it.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

// (Not a `new URL('<literal>', import.meta.url)`: packaging takes those for worker scripts to bundle.)
const body = new URL(`./collection-map-worker${'.ts'}`, import.meta.url);
if (existsSync(fileURLToPath(body))) {
  const loader = ['tsx', 'esm', 'api'].join('/');
  const { register } = await import(loader);
  register();
}
await import('./collection-map-worker.ts');
