/*
 * iscsi-load: a read/write iSCSI load generator on libiscsi's asynchronous API.
 *
 * libiscsi's own iscsi-perf only reads; `make bench` (docs/testing.md, "Benchmark") needs
 * writes, several sessions and latency percentiles, from one tool used against every target.
 * Every session keeps QUEUE_DEPTH READ(16) or WRITE(16) commands in flight for SECONDS; one
 * poll() loop drives all sessions, so the generator uses a single core however many sessions
 * it runs. Random offsets are aligned to the transfer size and drawn from a fixed seed per
 * session, so every target sees the same sequence of LBAs.
 *
 * Build: cc -O2 -o iscsi-load iscsi-load.c -liscsi   (Debian: libiscsi-dev)
 * Usage: iscsi-load [options] iscsi://host[:port]/IQN/LUN   (iscsi-load --help)
 *
 * Prints one summary line (or one JSON object with --json): I/Os completed within the run,
 * IOPS, MB/s (10^6 bytes/s), and completion latency mean/p50/p90/p99/p99.9/max. Exit status 0
 * on success, 1 on usage or connection errors, 2 when any command failed.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

#define DEFAULT_INITIATOR_PREFIX "iqn.2026-11.org.odxtarget:loadgen"
#define POLL_INTERVAL_MS 100
/* How long in-flight commands may take to drain after the run before we call the target hung. */
#define DRAIN_LIMIT_NS (60ULL * 1000000000ULL)
#define MAX_REPORTED_ERRORS 5
#define FILL_BYTE_SEED 0x5A

struct options {
    const char *url;
    const char *initiator_prefix;
    uint32_t transfer_bytes;
    int queue_depth;
    double seconds;
    int random;
    int write;
    int sessions;
    uint64_t seed;
    int json;
};

struct session;

/* One command slot: a session keeps queue_depth of them busy. */
struct slot {
    struct session *session;
    uint64_t issued_ns;
    unsigned char *buffer;
    struct scsi_iovec read_vector;
};

struct session {
    int index;
    struct iscsi_context *iscsi;
    int lun;
    uint32_t block_size;
    uint64_t block_count;
    uint32_t transfer_blocks;
    uint64_t transfer_slots;      /* how many transfer-sized, aligned positions the LU holds */
    uint64_t next_lba;            /* sequential mode */
    uint64_t random_state;        /* xorshift64*, random mode */
    int in_flight;
    uint64_t completed;           /* within the measured window */
    uint64_t errors;
    struct slot *slots;
};

struct latencies {
    uint64_t *values_ns;
    size_t count;
    size_t capacity;
};

static struct options options = {
    .initiator_prefix = DEFAULT_INITIATOR_PREFIX,
    .transfer_bytes = 4096,
    .queue_depth = 32,
    .seconds = 8.0,
    .sessions = 1,
    .seed = 1,
};
static uint64_t run_started_ns;
static uint64_t run_deadline_ns;
static struct latencies latencies;
static uint64_t reported_errors;

static uint64_t monotonic_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000ULL + (uint64_t)now.tv_nsec;
}

static void record_latency(uint64_t value_ns)
{
    if (latencies.count == latencies.capacity) {
        size_t capacity = latencies.capacity ? latencies.capacity * 2 : 65536;
        uint64_t *grown = realloc(latencies.values_ns, capacity * sizeof(*grown));
        if (grown == NULL) {
            fprintf(stderr, "iscsi-load: out of memory for latency samples\n");
            exit(1);
        }
        latencies.values_ns = grown;
        latencies.capacity = capacity;
    }
    latencies.values_ns[latencies.count++] = value_ns;
}

static uint64_t next_random(struct session *session)
{
    uint64_t x = session->random_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    session->random_state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static uint64_t next_lba(struct session *session)
{
    if (options.random) {
        return (next_random(session) % session->transfer_slots) * session->transfer_blocks;
    }
    uint64_t lba = session->next_lba;
    session->next_lba += session->transfer_blocks;
    if (session->next_lba + session->transfer_blocks > session->block_count) {
        session->next_lba = 0;
    }
    return lba;
}

static void command_done(struct iscsi_context *iscsi, int status, void *command_data, void *private_data);

static void issue(struct slot *slot)
{
    struct session *session = slot->session;
    uint64_t lba = next_lba(session);
    struct scsi_task *task;

    slot->issued_ns = monotonic_ns();
    if (options.write) {
        task = iscsi_write16_task(session->iscsi, session->lun, lba, slot->buffer, options.transfer_bytes,
                                  session->block_size, 0, 0, 0, 0, 0, command_done, slot);
    } else {
        /* Read straight into the slot's buffer instead of a buffer libiscsi allocates per command. */
        task = iscsi_read16_iov_task(session->iscsi, session->lun, lba, options.transfer_bytes,
                                     session->block_size, 0, 0, 0, 0, 0, command_done, slot,
                                     &slot->read_vector, 1);
    }
    if (task == NULL) {
        fprintf(stderr, "iscsi-load: session %d: cannot queue a command: %s\n", session->index,
                iscsi_get_error(session->iscsi));
        exit(1);
    }
    session->in_flight++;
}

static void command_done(struct iscsi_context *iscsi, int status, void *command_data, void *private_data)
{
    struct slot *slot = private_data;
    struct session *session = slot->session;
    struct scsi_task *task = command_data;
    uint64_t now = monotonic_ns();

    session->in_flight--;
    if (status != SCSI_STATUS_GOOD) {
        session->errors++;
        if (reported_errors++ < MAX_REPORTED_ERRORS) {
            if (status == SCSI_STATUS_CHECK_CONDITION && task != NULL) {
                fprintf(stderr, "iscsi-load: session %d: CHECK CONDITION key %#x asc/ascq %#06x\n",
                        session->index, task->sense.key, task->sense.ascq);
            } else {
                fprintf(stderr, "iscsi-load: session %d: status %#x: %s\n", session->index, status,
                        iscsi_get_error(iscsi));
            }
        }
    } else if (now <= run_deadline_ns) {
        session->completed++;
        record_latency(now - slot->issued_ns);
    }
    if (task != NULL) {
        scsi_free_scsi_task(task);
    }
    /* A failed slot stays idle: retrying at once would turn a broken target into a busy loop. */
    if (status == SCSI_STATUS_GOOD && now < run_deadline_ns) {
        issue(slot);
    }
}

static struct iscsi_context *connect_session(int index, int *lun)
{
    char initiator[256];
    snprintf(initiator, sizeof(initiator), "%s.%d.%d", options.initiator_prefix, (int)getpid(), index);
    struct iscsi_context *iscsi = iscsi_create_context(initiator);
    if (iscsi == NULL) {
        fprintf(stderr, "iscsi-load: iscsi_create_context failed\n");
        exit(1);
    }
    struct iscsi_url *url = iscsi_parse_full_url(iscsi, options.url);
    if (url == NULL) {
        fprintf(stderr, "iscsi-load: %s: %s\n", options.url, iscsi_get_error(iscsi));
        exit(1);
    }
    iscsi_set_targetname(iscsi, url->target);
    iscsi_set_session_type(iscsi, ISCSI_SESSION_NORMAL);
    /* Digests cost CPU on both ends; compare the targets without them. */
    iscsi_set_header_digest(iscsi, ISCSI_HEADER_DIGEST_NONE);
    /* A dropped connection must fail the run, not be hidden by a silent re-login. */
    iscsi_set_noautoreconnect(iscsi, 1);
    if (url->user[0] != '\0' && iscsi_set_initiator_username_pwd(iscsi, url->user, url->passwd) != 0) {
        fprintf(stderr, "iscsi-load: CHAP credentials: %s\n", iscsi_get_error(iscsi));
        exit(1);
    }
    if (iscsi_full_connect_sync(iscsi, url->portal, url->lun) != 0) {
        fprintf(stderr, "iscsi-load: session %d: login to %s failed: %s\n", index, options.url,
                iscsi_get_error(iscsi));
        exit(1);
    }
    *lun = url->lun;
    iscsi_destroy_url(url);
    return iscsi;
}

static void prepare_session(struct session *session, int index)
{
    memset(session, 0, sizeof(*session));
    session->index = index;
    session->iscsi = connect_session(index, &session->lun);

    struct scsi_task *task = iscsi_readcapacity16_sync(session->iscsi, session->lun);
    if (task == NULL || task->status != SCSI_STATUS_GOOD) {
        fprintf(stderr, "iscsi-load: READ CAPACITY(16) failed: %s\n", iscsi_get_error(session->iscsi));
        exit(1);
    }
    struct scsi_readcapacity16 *capacity = scsi_datain_unmarshall(task);
    if (capacity == NULL) {
        fprintf(stderr, "iscsi-load: cannot parse the READ CAPACITY(16) data\n");
        exit(1);
    }
    session->block_size = capacity->block_length;
    session->block_count = capacity->returned_lba + 1;
    scsi_free_scsi_task(task);

    if (session->block_size == 0 || options.transfer_bytes % session->block_size != 0) {
        fprintf(stderr, "iscsi-load: transfer size %" PRIu32 " is not a multiple of the %" PRIu32
                "-byte block\n", options.transfer_bytes, session->block_size);
        exit(1);
    }
    session->transfer_blocks = options.transfer_bytes / session->block_size;
    session->transfer_slots = session->block_count / session->transfer_blocks;
    if (session->transfer_slots == 0) {
        fprintf(stderr, "iscsi-load: the LU is smaller than one transfer\n");
        exit(1);
    }
    /* Sequential sessions start spread over the LU so that they do not read the same blocks. */
    session->next_lba = session->transfer_slots * (uint64_t)index / (uint64_t)options.sessions
                        * session->transfer_blocks;
    session->random_state = (options.seed + (uint64_t)index) * 0x9E3779B97F4A7C15ULL | 1;

    session->slots = calloc((size_t)options.queue_depth, sizeof(*session->slots));
    if (session->slots == NULL) {
        fprintf(stderr, "iscsi-load: out of memory\n");
        exit(1);
    }
    for (int i = 0; i < options.queue_depth; i++) {
        struct slot *slot = &session->slots[i];
        slot->session = session;
        if (posix_memalign((void **)&slot->buffer, 4096, options.transfer_bytes) != 0) {
            fprintf(stderr, "iscsi-load: out of memory\n");
            exit(1);
        }
        /* Not all zeros, so no target can take a zero-detection shortcut on writes. */
        for (uint32_t byte = 0; byte < options.transfer_bytes; byte++) {
            slot->buffer[byte] = (unsigned char)(FILL_BYTE_SEED + byte * 7 + (uint32_t)i);
        }
        slot->read_vector.iov_base = slot->buffer;
        slot->read_vector.iov_len = options.transfer_bytes;
    }
}

static int compare_u64(const void *left, const void *right)
{
    uint64_t a = *(const uint64_t *)left, b = *(const uint64_t *)right;
    return (a > b) - (a < b);
}

/* Nearest-rank percentile of the sorted samples, in microseconds. */
static double percentile_us(double fraction)
{
    if (latencies.count == 0) {
        return 0.0;
    }
    size_t rank = (size_t)(fraction * (double)latencies.count + 0.999999);
    if (rank < 1) {
        rank = 1;
    }
    if (rank > latencies.count) {
        rank = latencies.count;
    }
    return (double)latencies.values_ns[rank - 1] / 1000.0;
}

static void drive_until_drained(struct session *sessions)
{
    struct pollfd *descriptors = calloc((size_t)options.sessions, sizeof(*descriptors));
    if (descriptors == NULL) {
        fprintf(stderr, "iscsi-load: out of memory\n");
        exit(1);
    }
    for (;;) {
        int busy = 0;
        for (int i = 0; i < options.sessions; i++) {
            busy += sessions[i].in_flight;
            descriptors[i].fd = iscsi_get_fd(sessions[i].iscsi);
            descriptors[i].events = (short)iscsi_which_events(sessions[i].iscsi);
            descriptors[i].revents = 0;
        }
        if (busy == 0) {
            break;
        }
        if (monotonic_ns() > run_deadline_ns + DRAIN_LIMIT_NS) {
            fprintf(stderr, "iscsi-load: %d commands still in flight %llu s after the run ended\n", busy,
                    DRAIN_LIMIT_NS / 1000000000ULL);
            exit(1);
        }
        if (poll(descriptors, (nfds_t)options.sessions, POLL_INTERVAL_MS) < 0 && errno != EINTR) {
            perror("iscsi-load: poll");
            exit(1);
        }
        for (int i = 0; i < options.sessions; i++) {
            /* revents 0 still lets libiscsi expire timed-out commands. */
            if (iscsi_service(sessions[i].iscsi, descriptors[i].revents) < 0) {
                fprintf(stderr, "iscsi-load: session %d: %s\n", i, iscsi_get_error(sessions[i].iscsi));
                exit(1);
            }
        }
    }
    free(descriptors);
}

static void report(const struct session *sessions, double elapsed_seconds)
{
    uint64_t completed = 0, errors = 0;
    for (int i = 0; i < options.sessions; i++) {
        completed += sessions[i].completed;
        errors += sessions[i].errors;
    }
    qsort(latencies.values_ns, latencies.count, sizeof(uint64_t), compare_u64);
    double mean_us = 0.0;
    for (size_t i = 0; i < latencies.count; i++) {
        mean_us += (double)latencies.values_ns[i] / 1000.0;
    }
    if (latencies.count) {
        mean_us /= (double)latencies.count;
    }
    double iops = (double)completed / elapsed_seconds;
    double megabytes_per_second = iops * options.transfer_bytes / 1e6;
    const char *operation = options.write ? "write" : "read";
    const char *pattern = options.random ? "random" : "sequential";

    if (options.json) {
        printf("{\"operation\": \"%s\", \"pattern\": \"%s\", \"transfer_bytes\": %" PRIu32
               ", \"queue_depth\": %d, \"sessions\": %d, \"seconds\": %.3f, \"ios\": %" PRIu64
               ", \"iops\": %.1f, \"megabytes_per_second\": %.2f, \"errors\": %" PRIu64
               ", \"latency_us\": {\"mean\": %.1f, \"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f, "
               "\"p99.9\": %.1f, \"max\": %.1f}, \"session_iops\": [",
               operation, pattern, options.transfer_bytes, options.queue_depth, options.sessions,
               elapsed_seconds, completed, iops, megabytes_per_second, errors, mean_us, percentile_us(0.50),
               percentile_us(0.90), percentile_us(0.99), percentile_us(0.999), percentile_us(1.0));
        for (int i = 0; i < options.sessions; i++) {
            printf("%s%.1f", i ? ", " : "", (double)sessions[i].completed / elapsed_seconds);
        }
        printf("]}\n");
    } else {
        printf("%s %s, %" PRIu32 " bytes, QD%d x %d session(s), %.2f s: %" PRIu64 " I/Os, %.0f IOPS, "
               "%.1f MB/s, %" PRIu64 " errors\n", pattern, operation, options.transfer_bytes,
               options.queue_depth, options.sessions, elapsed_seconds, completed, iops,
               megabytes_per_second, errors);
        printf("latency us: mean %.1f  p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f\n", mean_us,
               percentile_us(0.50), percentile_us(0.90), percentile_us(0.99), percentile_us(0.999),
               percentile_us(1.0));
    }
}

static void usage(FILE *stream)
{
    fprintf(stream,
            "usage: iscsi-load [options] iscsi://[user[%%password]@]host[:port]/IQN/LUN\n"
            "  -b, --transfer-bytes N  bytes per command (default 4096; a multiple of the block size)\n"
            "  -q, --queue-depth N     commands in flight per session (default 32; 1 = latency mode)\n"
            "  -t, --seconds S         measured duration (default 8)\n"
            "  -r, --random            random aligned offsets (default: sequential)\n"
            "  -w, --write             WRITE(16) (default: READ(16))\n"
            "  -s, --sessions N        sessions, each with its own connection (default 1)\n"
            "  -S, --seed N            random seed; session i uses seed+i (default 1)\n"
            "  -i, --initiator PREFIX  initiator name prefix (default " DEFAULT_INITIATOR_PREFIX ")\n"
            "  -j, --json              print one JSON object instead of text\n"
            "Every run reports IOPS, MB/s (10^6 bytes/s) and latency mean/p50/p90/p99/p99.9/max.\n");
}

static long positive_number(const char *text, const char *what)
{
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno != 0 || *end != '\0' || value <= 0) {
        fprintf(stderr, "iscsi-load: %s must be a positive integer, not '%s'\n", what, text);
        exit(1);
    }
    return value;
}

static void parse_options(int argc, char **argv)
{
    static const struct option long_options[] = {
        {"transfer-bytes", required_argument, NULL, 'b'},
        {"queue-depth", required_argument, NULL, 'q'},
        {"seconds", required_argument, NULL, 't'},
        {"random", no_argument, NULL, 'r'},
        {"write", no_argument, NULL, 'w'},
        {"sessions", required_argument, NULL, 's'},
        {"seed", required_argument, NULL, 'S'},
        {"initiator", required_argument, NULL, 'i'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int option;
    while ((option = getopt_long(argc, argv, "b:q:t:rws:S:i:jh", long_options, NULL)) != -1) {
        switch (option) {
        case 'b': options.transfer_bytes = (uint32_t)positive_number(optarg, "--transfer-bytes"); break;
        case 'q': options.queue_depth = (int)positive_number(optarg, "--queue-depth"); break;
        case 't':
            options.seconds = strtod(optarg, NULL);
            if (options.seconds <= 0) {
                fprintf(stderr, "iscsi-load: --seconds must be positive\n");
                exit(1);
            }
            break;
        case 'r': options.random = 1; break;
        case 'w': options.write = 1; break;
        case 's': options.sessions = (int)positive_number(optarg, "--sessions"); break;
        case 'S': options.seed = (uint64_t)positive_number(optarg, "--seed"); break;
        case 'i': options.initiator_prefix = optarg; break;
        case 'j': options.json = 1; break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(1);
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        exit(1);
    }
    options.url = argv[optind];
}

int main(int argc, char **argv)
{
    parse_options(argc, argv);
    struct session *sessions = calloc((size_t)options.sessions, sizeof(*sessions));
    if (sessions == NULL) {
        fprintf(stderr, "iscsi-load: out of memory\n");
        return 1;
    }
    for (int i = 0; i < options.sessions; i++) {
        prepare_session(&sessions[i], i);
    }

    run_started_ns = monotonic_ns();
    run_deadline_ns = run_started_ns + (uint64_t)(options.seconds * 1e9);
    for (int i = 0; i < options.sessions; i++) {
        for (int j = 0; j < options.queue_depth; j++) {
            issue(&sessions[i].slots[j]);
        }
    }
    drive_until_drained(sessions);
    report(sessions, (double)(run_deadline_ns - run_started_ns) / 1e9);

    uint64_t errors = 0;
    for (int i = 0; i < options.sessions; i++) {
        errors += sessions[i].errors;
        iscsi_logout_sync(sessions[i].iscsi);
        iscsi_destroy_context(sessions[i].iscsi);
    }
    return errors ? 2 : 0;
}
