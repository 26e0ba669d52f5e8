/* A batch handler in C as a component of the world `wasmbatch:handler`
 * (guest-sdk/wit/handler.wit), through wit-bindgen's C bindings; build.sh builds it.
 *
 * Each item of a batch is a number. A batch's sum is emitted as a result,
 * {"batch": "<batch ID>", "attempt": <n>, "sum": <sum>}; a batch with an item that is
 * not a number is invalid input (it is not tried again). When the job is complete,
 * the handler reads the job's results back, adds the sums up and writes
 * "<total> from <n> batches" to /mnt/<job ID>/total.txt.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "handler.h"

/* The bindings free what a failure holds after the call: its message is a copy. */
static bool fail(handler_failure_t *err, uint8_t tag, const char *message) {
    err->tag = tag;
    handler_string_dup(&err->val.failed, message);
    return false;
}

static void log_line(wasmbatch_handler_host_level_t level, const char *message) {
    handler_string_t text;
    handler_string_set(&text, message);
    wasmbatch_handler_host_log(level, &text);
}

/* A NUL-terminated copy of a string or list the host handed over. */
static char *terminated(const uint8_t *ptr, size_t len) {
    char *text = malloc(len + 1);
    memcpy(text, ptr, len);
    text[len] = '\0';
    return text;
}

bool exports_handler_init(handler_string_t *job_spec, handler_failure_t *err) {
    (void)err;
    char line[64];
    snprintf(line, sizeof line, "c component: init with a %zu-byte spec", job_spec->len);
    log_line(WASMBATCH_HANDLER_HOST_LEVEL_INFO, line);
    handler_string_free(job_spec);
    return true;
}

bool exports_handler_handle_batch(handler_string_t *job_id, handler_list_u8_t *batch, handler_failure_t *err) {
    handler_string_free(job_id);
    /* The batch is a JSON array of numbers: "[1, 2.5, 3]". */
    char *text = terminated(batch->ptr, batch->len);
    handler_list_u8_free(batch);
    char *p = strchr(text, '[');
    double sum = 0;
    bool numbers = p != NULL;
    if (p) p++;
    while (numbers) {
        while (*p == ' ' || *p == ',' || *p == '\n' || *p == '\t' || *p == '\r') p++;
        if (*p == ']') break;
        char *end;
        double value = strtod(p, &end);
        numbers = end != p;
        sum += value;
        p = end;
    }
    free(text);
    if (!numbers) return fail(err, WASMBATCH_HANDLER_TYPES_FAILURE_INVALID_INPUT, "every item must be a number");

    handler_string_t id;
    if (!wasmbatch_handler_host_batch_id(&id)) return fail(err, WASMBATCH_HANDLER_TYPES_FAILURE_FAILED, "no batch ID");
    char result[256];
    snprintf(result, sizeof result, "{\"batch\": \"%.*s\", \"attempt\": %u, \"sum\": %.17g}", (int)id.len,
             (const char *)id.ptr, wasmbatch_handler_host_attempt(), sum);
    handler_string_free(&id);
    handler_string_t value, refused;
    handler_string_set(&value, result);
    if (!wasmbatch_handler_host_emit(&value, &refused)) {
        handler_string_free(&refused);
        return fail(err, WASMBATCH_HANDLER_TYPES_FAILURE_FAILED, "the host refused the result");
    }
    log_line(WASMBATCH_HANDLER_HOST_LEVEL_DEBUG, result);
    return true;
}

bool exports_handler_on_job_complete(handler_string_t *job_id, handler_string_t *summary, handler_failure_t *err) {
    char *job = terminated(job_id->ptr, job_id->len);
    handler_string_free(job_id);
    handler_string_free(summary);

    handler_string_t message;
    if (!wasmbatch_handler_host_results_open(&message)) {
        free(job);
        handler_string_free(&message);
        return fail(err, WASMBATCH_HANDLER_TYPES_FAILURE_FAILED, "the job's results cannot be read");
    }
    double total = 0;
    unsigned batches = 0;
    for (;;) {
        handler_option_string_t next;
        if (!wasmbatch_handler_host_results_next(&next, &message)) {
            free(job);
            handler_string_free(&message);
            return fail(err, WASMBATCH_HANDLER_TYPES_FAILURE_FAILED, "reading the job's results failed");
        }
        if (!next.is_some) break;
        /* {"batch": <index>, "result": {"batch": "...", "attempt": n, "sum": x}} */
        char *line = terminated(next.val.ptr, next.val.len);
        handler_option_string_free(&next);
        char *sum = strstr(line, "\"sum\":");
        if (sum) {
            total += strtod(sum + strlen("\"sum\":"), NULL);
            batches++;
        }
        free(line);
    }

    /* The host does not create /mnt/<job ID>/: the handler does (WASI preview 1, adapted). */
    char path[256];
    snprintf(path, sizeof path, "/mnt/%s", job);
    free(job);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) return fail(err, WASMBATCH_HANDLER_TYPES_FAILURE_FAILED, "cannot create the job's directory");
    strncat(path, "/total.txt", sizeof path - strlen(path) - 1);
    FILE *out = fopen(path, "w");
    if (!out) return fail(err, WASMBATCH_HANDLER_TYPES_FAILURE_FAILED, "cannot open total.txt");
    fprintf(out, "%.17g from %u batches\n", total, batches);
    fclose(out);
    printf("c component: %.17g from %u batches\n", total, batches);
    fflush(stdout);
    return true;
}
