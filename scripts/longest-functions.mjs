#!/usr/bin/env node
// Lists the longest functions (and methods, arrows) of the production code, by lines:
//   node scripts/longest-functions.mjs [N] [dir ...]   (default: 10; router common shard client cli web)
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';

const args = process.argv.slice(2);
const n = /^\d+$/.test(args[0] ?? '') ? Number(args.shift()) : 10;
const roots = args.length > 0 ? args : ['router', 'common', 'shard', 'client', 'cli', 'web'];

function* files(dir) {
  for (const name of readdirSync(dir)) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) yield* files(p);
    else if (p.endsWith('.ts') && !p.endsWith('.d.ts')) yield p;
  }
}

const found = [];
for (const root of roots) {
  for (const file of files(root)) {
    const src = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true);
    const visit = (node, owner) => {
      let name;
      if (
        ts.isFunctionDeclaration(node) ||
        ts.isMethodDeclaration(node) ||
        ts.isConstructorDeclaration(node)
      ) {
        name = ts.isConstructorDeclaration(node) ? 'constructor' : node.name?.getText(src);
      } else if (
        (ts.isArrowFunction(node) || ts.isFunctionExpression(node)) &&
        ts.isVariableDeclaration(node.parent)
      ) {
        name = node.parent.name.getText(src);
      }
      if (name !== undefined && 'body' in node && node.body) {
        const start = src.getLineAndCharacterOfPosition(node.getStart(src)).line + 1;
        const end = src.getLineAndCharacterOfPosition(node.getEnd()).line + 1;
        found.push({
          lines: end - start + 1,
          where: `${file}:${start}`,
          name: owner ? `${owner}.${name}` : name,
        });
      }
      const nextOwner = ts.isClassDeclaration(node) && node.name ? node.name.text : owner;
      ts.forEachChild(node, (c) => visit(c, nextOwner));
    };
    visit(src, undefined);
  }
}
found.sort((a, b) => b.lines - a.lines);
for (const f of found.slice(0, n)) console.log(`${String(f.lines).padStart(5)}  ${f.name}  ${f.where}`);
