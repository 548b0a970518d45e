/*
 * broker-stream - GET /sse on its own (split deployment).
 *
 * A process may hold at most RLIMIT_NOFILE descriptors (20,000 on the
 * machines this was built on, and not raisable), so one process holds about
 * 19,900 streams.  --stream_workers N forks N worker processes that each
 * listen on the same port with SO_REUSEPORT (the kernel spreads new
 * connections among them) and each subscribe to the whole bus.  The parent
 * only supervises: it restarts a worker that dies, and passes SIGTERM and
 * SIGINT on to them all (SIGTERM: each drains its streams over
 * --drain_seconds; a second SIGTERM or a SIGINT: each stops at once), then
 * exits when they all have.
 *
 * It subscribes to --bus_subscribe (ingest and auth), or with
 * --bus_forwarders to every forwarder instead, which each carry the whole
 * bus: ready then once one of them is connected.
 */
#include "bus.h"
#include "log.h"
#include "stream.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_SUBSCRIBE "tcp://127.0.0.1:5556,tcp://127.0.0.1:5557"

static int attach(door *d, broker_runtime *rt, void *bus)
{
    return stream_attach(d, rt, bus) != NULL ? 0 : -1;
}

static int worker_main(int argc, char **argv, int index)
{
    broker_runtime rt;
    http_server http;
    char name[32];
    snprintf(name, sizeof name, "broker-stream[%d]", index);
    int rc = runtime_open(&rt, argc, argv, name);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    const char *bus = rt.cfg.bus_subscribe[0] ? rt.cfg.bus_subscribe : DEFAULT_SUBSCRIBE;
    char *forwarded = NULL; /* the forwarders' subscribers' sides, in place of --bus_subscribe */
    int status = 1;
    if (rt.cfg.bus_forwarders[0] != '\0' && bus_forwarder_endpoints(rt.cfg.bus_forwarders, NULL, &forwarded) != 0) {
        runtime_close(&rt);
        return 2;
    }
    if (forwarded != NULL)
        bus = forwarded;
    if (http_server_init(&http, &rt.cfg) == 0) {
        log_info("%s: subscribing to %s", name, bus);
        if (stream_add_routes(&http, &rt) == 0 &&
            runtime_serve(&rt, &http, stream_conn_size(), 1, attach, (void *)bus, name) == 0)
            status = 0;
        http_server_stop(&http);
    }
    free(forwarded);
    runtime_close(&rt);
    return status;
}

/* Raises the soft descriptor limit to the hard one: streams are descriptors. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static pid_t spawn(int argc, char **argv, int index)
{
    pid_t pid = fork();
    if (pid == 0)
        _exit(worker_main(argc, argv, index));
    return pid;
}

/* Passes `sig` on to every worker and waits for them all, passing on any
 * later SIGTERM or SIGINT too (the workers' "stop at once") and SIGHUP;
 * a worker that ends now is not restarted.  0 when every worker exited 0. */
static int stop_workers(pid_t *pids, int workers, const sigset_t *set, int sig)
{
    int status = 0, left = 0;
    for (int i = 0; i < workers; i++)
        if (pids[i] > 0 && kill(pids[i], sig) == 0)
            left++;
        else
            pids[i] = 0;
    while (left > 0) {
        int st = 0;
        pid_t dead;
        while ((dead = waitpid(-1, &st, WNOHANG)) > 0) {
            for (int i = 0; i < workers; i++) {
                if (pids[i] != dead)
                    continue;
                pids[i] = 0;
                left--;
                if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0))
                    status = 1;
            }
        }
        if (dead < 0 && errno == ECHILD)
            break;
        if (left == 0 || sigwait(set, &sig) != 0)
            break;
        if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP)
            for (int i = 0; i < workers; i++)
                if (pids[i] > 0)
                    kill(pids[i], sig);
    }
    return status;
}

int main(int argc, char **argv)
{
    broker_config cfg;
    int rc = config_load(&cfg, argc, argv, "broker-stream");
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    int workers = (int)cfg.stream_workers;
    config_free(&cfg);
    raise_nofile();
    if (workers == 1)
        return worker_main(argc, argv, 0);

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_BLOCK, &set, NULL);
    pid_t *pids = calloc((size_t)workers, sizeof *pids);
    if (pids == NULL)
        return 1;
    for (int i = 0; i < workers; i++)
        pids[i] = spawn(argc, argv, i);
    int sig = 0;
    for (;;) {
        sigwait(&set, &sig);
        if (sig == SIGHUP) { /* reload the certificate: each worker has its own front door */
            for (int i = 0; i < workers; i++)
                if (pids[i] > 0)
                    kill(pids[i], SIGHUP);
            continue;
        }
        if (sig != SIGCHLD) /* SIGTERM or SIGINT */
            break;
        int st;
        pid_t dead;
        while ((dead = waitpid(-1, &st, WNOHANG)) > 0) {
            for (int i = 0; i < workers; i++) {
                if (pids[i] != dead)
                    continue;
                fprintf(stderr, "broker-stream: worker %d (pid %d) ended with status %d; restarting it\n", i,
                        (int)dead, WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
                sleep(1); /* no tight restart loop when a worker cannot start */
                pids[i] = spawn(argc, argv, i);
            }
        }
    }
    int status = stop_workers(pids, workers, &set, sig);
    free(pids);
    return status;
}
