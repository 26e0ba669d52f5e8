/* A wasmbatch guest in C, written from docs/abi.md alone (the "C" section shows how
 * to build it). Each item of a batch is a number; the batch's sum is appended to
 * /mnt/<job_id>/sums.txt as "<batch_id> <attempt> <sum>". A batch with an item that is
 * not a number is invalid input (status 2); the init hook logs the job spec's size.
 *
 * clang --target=wasm32-wasi -mexec-model=reactor -O2 -o sum.wasm sum.c
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define IMPORT(name) __attribute__((import_module("wasmbatch"), import_name(name)))
#define EXPORT(name) __attribute__((export_name(name)))

IMPORT("set_error") void wb_set_error(const char *ptr, int32_t len);
IMPORT("log") void wb_log(int32_t level, const char *ptr, int32_t len);
IMPORT("batch_id") int32_t wb_batch_id(char *ptr, int32_t cap);
IMPORT("attempt") int32_t wb_attempt(void);

static int32_t fail(int32_t status, const char *message) {
    wb_set_error(message, (int32_t)strlen(message));
    return status;
}

EXPORT("wasmbatch_abi_version") int32_t abi_version(void) { return 1; }

/* Inputs are malloc'ed here and freed by the guest once used. */
EXPORT("wasmbatch_alloc") void *alloc(int32_t len) { return malloc((size_t)len); }

EXPORT("wasmbatch_init") int32_t init(char *spec, int32_t len) {
    char line[64];
    int n = snprintf(line, sizeof line, "c guest: init with a %d-byte spec", (int)len);
    wb_log(2, line, n);
    free(spec);
    return 0;
}

EXPORT("wasmbatch_handle") int32_t handle(char *job, int32_t job_len, char *batch, int32_t batch_len) {
    char job_id[128];
    if (job_len <= 0 || job_len >= (int32_t)sizeof job_id) {
        free(job);
        free(batch);
        return fail(2, "the job ID must have 1 to 127 bytes");
    }
    memcpy(job_id, job, (size_t)job_len);
    job_id[job_len] = '\0';
    free(job);

    /* The batch is a JSON array of numbers: "[1, 2.5, 3]". Not NUL-terminated. */
    char *text = malloc((size_t)batch_len + 1);
    memcpy(text, batch, (size_t)batch_len);
    text[batch_len] = '\0';
    free(batch);
    char *p = strchr(text, '[');
    double sum = 0;
    int status = p ? 0 : 2;
    if (p) p++;
    while (status == 0) {
        while (*p == ' ' || *p == ',' || *p == '\n' || *p == '\t' || *p == '\r') p++;
        if (*p == ']') break;
        char *end;
        double value = strtod(p, &end);
        if (end == p) status = 2;
        sum += value;
        p = end;
    }
    free(text);
    if (status != 0) return fail(2, "every item must be a number");

    char id[129];
    int32_t id_len = wb_batch_id(id, (int32_t)sizeof id - 1);
    id[id_len < (int32_t)sizeof id ? id_len : (int32_t)sizeof id - 1] = '\0';

    /* The host does not create /mnt/<job_id>/: the guest does. */
    char path[256];
    snprintf(path, sizeof path, "/mnt/%s", job_id);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) return fail(1, "cannot create the job's directory");
    snprintf(path, sizeof path, "/mnt/%s/sums.txt", job_id);
    FILE *out = fopen(path, "a");
    if (!out) return fail(1, "cannot open sums.txt");
    fprintf(out, "%s %d %g\n", id, (int)wb_attempt(), sum);
    fclose(out);
    printf("c guest: batch %s summed to %g\n", id, sum);
    fflush(stdout);
    return 0;
}
