// Greedy decoding through llama.cpp's own loader and CPU backend, for crates/engine/tests/llamacpp_loader.rs:
// does llama.cpp accept our language-model GGUF, and which tokens does it pick?
//
// usage: greedy MODEL.gguf N_PREDICT ID[,ID...]
// prints one JSON object: {"tokens": [...], "margins": [...]} (margin: top-1 minus top-2 logit per step);
// exit 1 with llama.cpp's own error lines on stderr when it refuses the file.
#include "llama.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void log_errors(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level == GGML_LOG_LEVEL_ERROR || level == GGML_LOG_LEVEL_WARN) fputs(text, stderr);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODEL.gguf N_PREDICT ID[,ID...]\n", argv[0]);
        return 2;
    }
    int n_predict = atoi(argv[2]);
    if (n_predict < 1 || n_predict > 4096) {
        fprintf(stderr, "greedy: N_PREDICT %s is not in 1..4096\n", argv[2]);
        return 2;
    }
    static int32_t ids[4096];
    int n = 0;
    for (char *t = strtok(argv[3], ","); t; t = strtok(NULL, ",")) {
        if (n == 4096) {
            fprintf(stderr, "greedy: more than 4096 prompt ids\n");
            return 2;
        }
        ids[n++] = atoi(t);
    }
    if (n == 0) {
        fprintf(stderr, "greedy: empty prompt\n");
        return 2;
    }
    llama_log_set(log_errors, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    struct llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (!model) {
        fprintf(stderr, "greedy: llama.cpp could not load %s\n", argv[1]);
        return 1;
    }
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)(n + n_predict + 16);
    cp.n_batch = cp.n_ctx;
    cp.n_ubatch = cp.n_ctx;
    cp.n_threads = 2;
    cp.n_threads_batch = 2;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        fprintf(stderr, "greedy: cannot create a context\n");
        return 1;
    }
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    struct llama_batch batch = llama_batch_get_one(ids, n);
    static int32_t next;
    printf("{\"tokens\": [");
    char margins[4096 * 24];
    size_t used = 0;
    for (int i = 0; i < n_predict; i++) {
        if (llama_decode(ctx, batch) != 0) {
            fprintf(stderr, "greedy: llama_decode failed at step %d\n", i);
            return 1;
        }
        const float *logits = llama_get_logits_ith(ctx, -1);
        int best = 0, second = -1;
        for (int j = 1; j < n_vocab; j++) {
            if (logits[j] > logits[best]) {
                second = best;
                best = j;
            } else if (second < 0 || logits[j] > logits[second]) {
                second = j;
            }
        }
        printf(i ? ", %d" : "%d", best);
        used += (size_t)snprintf(margins + used, sizeof margins - used, i ? ", %.6g" : "%.6g",
                                 (double)(logits[best] - logits[second]));
        next = best;
        batch = llama_batch_get_one(&next, 1);
    }
    printf("], \"margins\": [%s]}\n", margins);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
