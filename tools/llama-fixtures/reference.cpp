// The llama.cpp side of memkern's agreement fixtures: for each prompt (read
// NUL-separated from stdin), llama.cpp's token ids (special tokens parsed;
// BOS added as the model's metadata asks only with --add-special), the five highest logits after the prompt, and up to 32
// greedy tokens (stopping at an end-of-generation token). One JSON object
// per line on stdout; CPU, one thread, the whole prompt as one batch, as
// shared/fixtures/smollm2_reference.jsonl was made.
//
// Built and run by tools/llama-fixtures/reference.sh against the libllama
// that benches/llama-cpp/build.sh builds.
#include "llama.h"

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <numeric>
#include <string>
#include <vector>

static std::vector<int> top_k(const float * logits, int n, int k) {
    std::vector<int> idx(n);
    std::iota(idx.begin(), idx.end(), 0);
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                      [&](int a, int b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
    idx.resize(k);
    return idx;
}

int main(int argc, char ** argv) {
    const bool add_special = argc == 3 && std::string(argv[2]) == "--add-special";
    if (argc != 2 && !add_special) {
        fprintf(stderr, "usage: %s MODEL.gguf [--add-special] < prompts (NUL-separated)\n", argv[0]);
        return 2;
    }
    std::string all((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    std::vector<std::string> prompts;
    size_t start = 0;
    for (size_t i = 0; i <= all.size(); ++i) {
        if (i == all.size() || all[i] == '\0') {
            if (i > start) prompts.push_back(all.substr(start, i - start));
            start = i + 1;
        }
    }

    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) {
        fprintf(stderr, "cannot load %s\n", argv[1]);
        return 1;
    }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);
    const int n_predict = 32;

    for (const auto & prompt : prompts) {
        int n = -llama_tokenize(vocab, prompt.c_str(), prompt.size(), nullptr, 0, add_special, true);
        std::vector<llama_token> ids(n);
        if (llama_tokenize(vocab, prompt.c_str(), prompt.size(), ids.data(), n, add_special, true) < 0) {
            fprintf(stderr, "tokenize failed\n");
            return 1;
        }
        llama_context_params cp = llama_context_default_params();
        cp.n_ctx = n + n_predict + 8;
        cp.n_batch = std::max(n, 1);
        cp.n_ubatch = std::max(n, 1);
        cp.n_threads = 1;
        cp.n_threads_batch = 1;
        llama_context * ctx = llama_init_from_model(model, cp);
        if (!ctx) {
            fprintf(stderr, "cannot create context\n");
            return 1;
        }
        llama_batch_ext * batch = llama_batch_ext_init(ctx);
        auto feed = [&](const llama_token * t, int count, llama_pos pos0) {
            llama_batch_ext_clear(batch);
            for (int i = 0; i < count; ++i) {
                const int32_t idx = llama_batch_ext_add_token(batch, 0, t[i]);
                const llama_pos pos = pos0 + i;
                llama_batch_ext_set_pos(batch, idx, &pos);
            }
            llama_batch_ext_set_output_logits(batch, count - 1, true);
            return llama_process(ctx, LLAMA_PROCESS_TYPE_DECODE, batch);
        };
        if (feed(ids.data(), n, 0)) {
            fprintf(stderr, "decode failed\n");
            return 1;
        }
        printf("{\"prompt_ids\":[");
        for (int i = 0; i < n; ++i) printf("%s%d", i ? "," : "", ids[i]);
        printf("],\"first_top5\":[");
        const float * logits = llama_get_logits_ith(ctx, -1);
        auto top = top_k(logits, n_vocab, 5);
        for (int i = 0; i < 5; ++i) printf("%s[%d,%.6f]", i ? "," : "", top[i], logits[top[i]]);
        printf("],\"greedy_ids\":[");
        llama_pos pos = n;
        for (int g = 0; g < n_predict; ++g) {
            llama_token t = top_k(logits, n_vocab, 1)[0];
            if (llama_vocab_is_eog(vocab, t)) break;
            printf("%s%d", g ? "," : "", t);
            if (feed(&t, 1, pos)) {
                fprintf(stderr, "decode failed\n");
                return 1;
            }
            pos += 1;
            logits = llama_get_logits_ith(ctx, -1);
        }
        printf("]}\n");
        fflush(stdout);
        llama_batch_ext_free(batch);
        llama_free(ctx);
    }
    llama_model_free(model);
    return 0;
}
