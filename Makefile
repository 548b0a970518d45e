# Broker: the two commands are `make run` and `make test`.
#   make run     install what is missing, build, start the all-in-one broker
#                (embedded store at ./db, port 8080; pass flags with ARGS="--port 9000")
#   make test    install, build (plain and ASan+UBSan) and run every test
#   make run-split  the split deployment on loopback (gateway on 8080)
#   make images  the docker images of the compose deployment, also offline (scripts/images.sh),
#                and its secrets (make secrets)
#   make secrets the compose deployment's secrets in deploy/secrets/: admin token, JWT secret,
#                store URI, the bus's CURVE keys (scripts/compose-secrets.sh; DIR=...; kept if present)
#   make bus-keys  CURVE key pairs for the split deployment's bus (scripts/bus-keys.sh; DIR=...)
#   make bench   run the benchmarks against Nchan and Mercure (bench/README.md)
#   make soak    ~12 minutes of steady mixed load on one broker (bench/soak.md)
#   make chaos   ten minutes of random client behaviour against the front door (tests/chaos)

BUILD      ?= build
BUILD_ASAN ?= build-asan
JOBS       ?= $(shell nproc)
ARGS       ?=

.PHONY: all deps build build-asan run run-split images secrets bus-keys test bench soak chaos clean

all: build

deps:
	@scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

build-asan: deps
	@cmake -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=Debug -DBROKER_SANITIZE=ON >/dev/null
	@cmake --build $(BUILD_ASAN) -j$(JOBS)

run: build
	./$(BUILD)/broker $(ARGS)

# The split deployment on loopback: auth, ingest, two stream processes, nginx gateway.
run-split: build
	@scripts/deps.sh split
	scripts/run-split.sh $(ARGS)

# docker-compose.yml needs its secrets' files to start: made here too, so
# that `make images` then `docker compose up` gives a CURVE bus.
images: build
	@scripts/images.sh
	@scripts/compose-secrets.sh $(DIR)

secrets: build
	@scripts/compose-secrets.sh $(DIR)

bus-keys: build
	@scripts/bus-keys.sh $(DIR)

test:
	@scripts/deps.sh test
	@tests/run_all.sh

bench: build
	@scripts/deps.sh bench
	@bench/run.sh

soak: build
	@scripts/deps.sh bench
	@python3 bench/soak.py

# The chaos test of make test, for ten minutes, on the ASan+UBSan build.
chaos: build-asan
	@scripts/deps.sh test
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  BROKER_SANITIZED=1 BROKER_BIN=$(CURDIR)/$(BUILD_ASAN)/broker CHAOS_SECONDS=600 \
	  /usr/bin/python3 -m pytest -q -s -p no:cacheprovider tests/chaos

clean:
	rm -rf $(BUILD) $(BUILD_ASAN)
