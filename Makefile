# Holdfast: the two set-up commands are `make demo` and `make test` (Debian, as root).
SHELL := /bin/bash
DEMO_DIR ?= /tmp/holdfast-demo
APT_PACKAGES := e2fsprogs python3 attr acl time fuse3 libfuse3-dev pkg-config fio

.PHONY: deps build release demo test test-tsan crash fuzz check-layers docs bench bench-ls bench-mkfs bench-mount bench-fsync bench-memory bench-write-memory bench-writeback clean

# Installs what the tests and the demo use, when something is missing.
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "run as root, or install:$$missing" >&2; exit 1; fi; \
	fi

build:
	swift build

release:
	swift build -c release

# The main job on a built-in example: make an image from a generated tree, inspect it, extract it,
# and check the extracted tree against the image (through a loop mount when permitted).
demo: deps release
	@rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR)
	@python3 scripts/make_tree.py $(DEMO_DIR)/tree --profile small --seed 1 >/dev/null
	@mkfs.ext4 -q -F -b 1024 -d $(DEMO_DIR)/tree $(DEMO_DIR)/demo.img 96M >/dev/null
	@echo "== holdfast info"; .build/release/holdfast info $(DEMO_DIR)/demo.img
	@echo; echo "== holdfast ls -l /"; .build/release/holdfast ls -l $(DEMO_DIR)/demo.img /
	@echo; echo "== holdfast tree /nest"; .build/release/holdfast tree $(DEMO_DIR)/demo.img /nest
	@echo; echo "== holdfast extract (8 MiB budget, with --stats)"; /usr/bin/time -f "peak RSS %M KiB, %e s" .build/release/holdfast extract --memory 8M --stats $(DEMO_DIR)/demo.img $(DEMO_DIR)/out
	@if mkdir -p $(DEMO_DIR)/mnt && mount -o ro,loop,noatime $(DEMO_DIR)/demo.img $(DEMO_DIR)/mnt 2>/dev/null; then \
	  python3 scripts/treediff.py --ignore-root-times $(DEMO_DIR)/out $(DEMO_DIR)/mnt && echo "extracted tree equals the kernel's view of the image"; \
	  rc=$$?; umount $(DEMO_DIR)/mnt; exit $$rc; \
	else echo "(loop mount not permitted here: skipping the comparison with the kernel's view)"; fi
	@echo; echo "== holdfast mkfs --from (16 MiB budget), then put, mv, rm, chmod, xattr"
	@/usr/bin/time -f "peak RSS %M KiB, %e s" .build/release/holdfast mkfs $(DEMO_DIR)/made.img 96M --from $(DEMO_DIR)/tree --memory 16M
	@.build/release/holdfast put $(DEMO_DIR)/made.img scripts /scripts
	@.build/release/holdfast mv $(DEMO_DIR)/made.img /scripts /tools
	@.build/release/holdfast rm $(DEMO_DIR)/made.img /nest -r
	@.build/release/holdfast chmod $(DEMO_DIR)/made.img 700 /tools
	@.build/release/holdfast xattr $(DEMO_DIR)/made.img /tools --set user.note=demo
	@.build/release/holdfast ls -l $(DEMO_DIR)/made.img /
	@e2fsck -fn $(DEMO_DIR)/made.img >/dev/null 2>&1 && echo "e2fsck -fn: clean" || { echo "e2fsck -fn found problems"; exit 1; }
	@if mount -o ro,loop,noatime $(DEMO_DIR)/made.img $(DEMO_DIR)/mnt 2>/dev/null; then \
	  rm -rf $(DEMO_DIR)/tree/nest; \
	  python3 scripts/treediff.py --ignore-root-times $(DEMO_DIR)/tree $(DEMO_DIR)/mnt 2>&1 | tail -3; \
	  echo "(expected differences: lost+found, and /tools that the demo added)"; umount $(DEMO_DIR)/mnt; \
	else echo "(loop mount not permitted here: skipping the comparison with the kernel's view)"; fi
	@echo; echo "== holdfast mount: cp -a through FUSE, a file unlinked while open, unmount, e2fsck"
	@if [ -e /dev/fuse ] && [ "$$(id -u)" = 0 ]; then \
	  mkdir -p $(DEMO_DIR)/fuse && .build/release/holdfast mount --memory 32M $(DEMO_DIR)/made.img $(DEMO_DIR)/fuse && \
	  cp -a scripts $(DEMO_DIR)/fuse/copied && ls -l $(DEMO_DIR)/fuse && df -h $(DEMO_DIR)/fuse | tail -1 && \
	  python3 -c "import os,sys; d=sys.argv[1]; fd=os.open(d+'/tmp',os.O_CREAT|os.O_RDWR); os.write(fd,b'x'*99999); os.unlink(d+'/tmp'); print('unlinked while open, still reads', len(os.pread(fd,200000,0)), 'bytes'); os.close(fd)" $(DEMO_DIR)/fuse && \
	  umount $(DEMO_DIR)/fuse && flock $(DEMO_DIR)/made.img true && \
	  { e2fsck -fn $(DEMO_DIR)/made.img >/dev/null 2>&1 && echo "e2fsck -fn after the mount: clean" || { echo "e2fsck -fn found problems"; exit 1; }; }; \
	else echo "(FUSE mounts are not permitted here: skipping the mount)"; fi

# The layer check, all tests, then the memory layer's tests again under ThreadSanitizer
# (a separate build folder).
test: deps check-layers
	swift build --build-tests
	swift test --skip-build
	$(MAKE) test-tsan
	FUZZ_SEED=1 $(MAKE) fuzz FUZZ_SECONDS=60

# The fuzz targets (Fuzz/): libFuzzer with AddressSanitizer over hostile images (read, write),
# journals and directory blocks, FUZZ_SECONDS each (make test runs 60 s each; a campaign, e.g.
# FUZZ_SECONDS=7200 FUZZ_PARALLEL=2). Corpora grow in .build-fuzz/corpus; a finding fails the
# run and is kept in .build-fuzz/findings.
FUZZ_SECONDS ?= 600
fuzz: deps
	Fuzz/run.sh $(FUZZ_SECONDS)

# The crash campaign: every crash state of eleven workloads (nine CLI, two through the library)
# recovered by Holdfast and judged by e2fsck, and by the kernel on each state (make test runs
# them with the kernel on every 20th, the long import sampled to 150 states). Prints per
# workload the states checked and the failures.
crash: deps
	swift build --build-tests
	HOLDFAST_CRASH_KERNEL_EVERY=1 HOLDFAST_CRASH_SUBSETS=8 HOLDFAST_CRASH_STATES=2000 \
		swift test --skip-build --filter CrashCampaignTests

test-tsan:
	swift test --sanitize=thread --scratch-path .build-tsan --filter HoldfastMemoryTests

# Imports follow the layer table of docs/architecture.md; no raw on-disk offsets above HoldfastFormat.
check-layers:
	scripts/check_layers.sh

# The public API's documentation (DocC), as a static site in .build/docs.
docs:
	swift package --allow-writing-to-directory .build/docs generate-documentation --target Holdfast \
	  --disable-indexing --transform-for-static-hosting --output-path .build/docs
	@echo "open .build/docs/index.html, or serve .build/docs and visit /documentation/holdfast"

# Side-by-side benchmark against debugfs rdump (not a test).
bench: deps release
	scripts/bench_extract.sh --holdfast .build/release/holdfast
	scripts/bench_ls.sh --holdfast .build/release/holdfast

# holdfast ls -l beside debugfs -R 'ls -l' on a 20,000-entry directory (part of make bench).
bench-ls: deps release
	scripts/bench_ls.sh --holdfast .build/release/holdfast

# Side-by-side benchmark of holdfast mkfs --from against mke2fs -d (not a test).
bench-mkfs: deps release
	scripts/bench_mkfs.sh --holdfast .build/release/holdfast

# Append+fsync latency through the journal against the kernel's ext4 on a loop mount (not a test).
# holdfast mount beside fuse2fs and the kernel: cp -a, ls -lR, dd, fio, rm -rf, and peak RSS.
bench-mount: deps release
	@command -v fuse2fs >/dev/null || apt-get install -y -qq fuse2fs
	scripts/bench_mount.sh

bench-fsync: deps release
	scripts/bench_fsync.sh

# Peak RSS against the budget while writing 4.6 GiB and 200,000 files with --memory 32M (not a test).
bench-writeback: deps release
	scripts/bench_writeback.sh

bench-write-memory: deps release
	scripts/bench_write_memory.sh --holdfast .build/release/holdfast

# ns per operation of page allocate+free and object charge+uncharge, 1 and 2 threads, beside malloc.
bench-memory:
	swift build -c release --product holdfast-membench
	.build/release/holdfast-membench

clean:
	rm -rf .build .build-tsan .build-fuzz $(DEMO_DIR)
