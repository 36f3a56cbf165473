# Both targets create .venv on first use (Python 3.11) and install this package into it.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= demo_output
# pytest-xdist workers; each test file runs in one worker (heavy TF tests are spread over the cores).
TEST_WORKERS ?= 2

.PHONY: demo test lint venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

DEMO_RUN := --config=configs/catsdogs_demo.py --data_dir=$(DEMO_DIR)/catsdogs --model_dir=$(DEMO_DIR)/run \
	--strategy=mirrored --num_cpu_devices=2

# The whole product offline: a replica of the cats/dogs download as it unpacks (the README's build command on it)
# -> TFRecords (and PNG grids of them) -> training on 2 logical CPU devices -> evaluation on the test split -> export
# -> prediction from the export alone.
demo: venv
	rm -rf $(DEMO_DIR)
	$(PY) -m data_prep.sample_data --output_dir=$(DEMO_DIR)/kagglecatsanddogs_5340 --images_per_class=150
	$(PY) -m data_prep.build --dataset=catsdogs --input_dir=$(DEMO_DIR)/kagglecatsanddogs_5340 \
		--output_dir=$(DEMO_DIR)/catsdogs --image_size=80
	$(PY) -m data_prep.show --data_dir=$(DEMO_DIR)/catsdogs --output=$(DEMO_DIR)/catsdogs_examples.png
	$(PY) -m trainer.main $(DEMO_RUN)
	$(PY) -m trainer.main $(DEMO_RUN) --mode=eval
	$(PY) -m trainer.predict --model=$(DEMO_DIR)/run/export/saved_model \
		$(DEMO_DIR)/kagglecatsanddogs_5340/PetImages/Cat/1.jpg $(DEMO_DIR)/kagglecatsanddogs_5340/PetImages/Dog/1.jpg
	@echo
	@echo "Dataset and build report:  $(DEMO_DIR)/catsdogs/ (build_report.json, metadata.json)"
	@echo "A look at the dataset:     $(DEMO_DIR)/catsdogs_examples.png, $(DEMO_DIR)/catsdogs_examples_augmented.png"
	@echo "Training history, curves:  $(DEMO_DIR)/run/history.csv, $(DEMO_DIR)/run/learning_curves.png"
	@echo "Evaluation on test:        $(DEMO_DIR)/run/eval/ (report, confusion matrix, most confident mistakes)"
	@echo "Serving export:            $(DEMO_DIR)/run/export/saved_model (python -m trainer.predict --model=... IMAGE ...)"
	@echo "TensorBoard:               tensorboard --logdir=$(DEMO_DIR)/run/tensorboard"

# Lint, format and type check (configured in pyproject.toml); CI runs it before the tests.
lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# pytest's exit status 5 means no test was collected: reported, and a failure like any other.
test: venv
	@$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile; status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$status

clean:
	rm -rf $(VENV) $(DEMO_DIR) *.egg-info .pytest_cache
