/*
 * Baseline for benchmarks/streams.py: the plainest writer-to-reader hand-off between two
 * processes in C. The writer stamps CLOCK_REALTIME into shared memory and posts a semaphore
 * (mode "sem") or bumps a counter (mode "spin"); the reader wakes, reads the clock and stores
 * the difference. Prints one latency in ns per line.
 *
 * usage: handoff sem|spin N PERIOD_US
 */
#define _GNU_SOURCE
#include <semaphore.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    sem_t sem;
    volatile uint64_t counter;
    volatile int64_t stamp;
    volatile int ready;
    volatile long nlat;
    int64_t lat[];
} shared_t;

static int64_t now_ns(clockid_t c) {
    struct timespec ts;
    clock_gettime(c, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: handoff sem|spin N PERIOD_US\n");
        return 2;
    }
    int spin = strcmp(argv[1], "spin") == 0;
    long n = atol(argv[2]);
    int64_t period = (int64_t)(atof(argv[3]) * 1000);
    shared_t *sh = mmap(NULL, sizeof *sh + n * sizeof(int64_t), PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    sem_init(&sh->sem, 1, 0);
    pid_t pid = fork();
    if (pid == 0) { /* reader */
        /* Posts coalesce while the reader is late (binary semaphore), so read until the
         * last frame rather than counting wake-ups. */
        uint64_t seen = 0;
        long i = 0;
        sh->ready = 1;
        while (seen < (uint64_t)n) {
            if (spin) {
                while (sh->counter == seen) __builtin_ia32_pause();
            } else {
                sem_wait(&sh->sem);
            }
            sh->lat[i++] = now_ns(CLOCK_REALTIME) - sh->stamp;
            seen = sh->counter;
        }
        sh->nlat = i;
        _exit(0);
    }
    while (!sh->ready) usleep(100);
    usleep(50000);
    int64_t next = now_ns(CLOCK_MONOTONIC);
    for (long i = 0; i < n; i++) {
        next += period;
        int64_t left;
        while ((left = next - now_ns(CLOCK_MONOTONIC)) > 0)
            if (left > 200000) usleep((left - 150000) / 1000);
        sh->stamp = now_ns(CLOCK_REALTIME);
        __atomic_thread_fence(__ATOMIC_RELEASE);
        sh->counter = i + 1;
        if (!spin) {
            int v;
            sem_getvalue(&sh->sem, &v);
            if (v < 1) sem_post(&sh->sem);
        }
    }
    waitpid(pid, NULL, 0);
    for (long i = 0; i < sh->nlat; i++) printf("%lld\n", (long long)sh->lat[i]);
    return 0;
}
