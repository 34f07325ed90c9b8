#!/usr/bin/env python3
"""Architecture figures of issue 13, for a checkout at ROOT (default: .): members of
Filesystem and Operation and the files they spread over, @unchecked Sendable, EINTR checks,
raw on-disk offset accesses above HoldfastFormat, README lines, the CLI's imports.
Usage: scripts/architecture_metrics.py [ROOT]"""
import re,sys,glob,os
root=sys.argv[1] if len(sys.argv) > 1 else "."
def members(typ):
    files=set(); count=0
    for f in glob.glob(root+'/Sources/**/*.swift', recursive=True):
        lines=open(f).read().split('\n')
        inside=False
        for l in lines:
            if re.match(r'^(public |package )?(final )?(extension|class|struct) '+typ+r'\b', l): inside=True; continue
            if inside and l.startswith('}'): inside=False; continue
            if inside and re.match(r'^    (@\w+ )*((public|package|private|fileprivate|internal|static|override|mutating|nonisolated|final|lazy|@discardableResult) )*(func|var|let|init|subscript)\b', l):
                count+=1; files.add(f)
    return count, len(files)
for t in ['Filesystem','WriteContext','Operation']:
    print(t, members(t))
src=glob.glob(root+'/Sources/**/*.swift', recursive=True)
unchecked=sum(open(f).read().count('@unchecked Sendable') for f in src)
print('@unchecked Sendable', unchecked)
eintr=sum(len(re.findall(r'EINTR', re.sub(r'//.*','',open(f).read()))) for f in src)
print('EINTR checks in code', eintr)
raw=0
for d in ['HoldfastDevice','HoldfastCache','HoldfastJournal','Holdfast','HoldfastHost','holdfast','HoldfastCLI']:
    for f in glob.glob(root+f'/Sources/{d}/**/*.swift', recursive=True):
        raw+=len(re.findall(r'\b(set)?(le|LE|be|BE)(16|32|64)\(|\b(set)?(u8|U8)\(', open(f).read()))
print('raw offset accesses above Format', raw)
print('README lines', sum(1 for _ in open(root+'/README.md')))
cli=[f for f in src if '/Sources/holdfast/' in f or '/Sources/HoldfastCLI/' in f]
imps=set()
for f in cli:
    for m in re.findall(r'^import (\w+)', open(f).read(), re.M): imps.add(m)
print('CLI imports', sorted(imps))
