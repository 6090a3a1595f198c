-- made by tests/data/stores/make_store.py from /tmp/old-5860b82/engine/__init__.py

CREATE TABLE hardware (
	key VARCHAR(64) NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	kind VARCHAR(10) NOT NULL, 
	memory_gb DOUBLE PRECISION NOT NULL, 
	price_per_hour DOUBLE PRECISION NOT NULL, 
	price_source TEXT NOT NULL, 
	price_date VARCHAR(7) NOT NULL, 
	bandwidth_gbs DOUBLE PRECISION, 
	bf16_tflops DOUBLE PRECISION, 
	updated_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	PRIMARY KEY (key)
);

CREATE TABLE workloads (
	id SERIAL NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	filename VARCHAR(500) NOT NULL, 
	format VARCHAR(40) NOT NULL, 
	raw BYTEA NOT NULL, 
	sha256 VARCHAR(64) NOT NULL, 
	n_requests INTEGER NOT NULL, 
	issues_json TEXT NOT NULL, 
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	PRIMARY KEY (id)
);

CREATE TABLE load_runs (
	id SERIAL NOT NULL, 
	workload_id INTEGER NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	spec_json TEXT NOT NULL, 
	status VARCHAR(20) NOT NULL, 
	error TEXT, 
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	finished_at TIMESTAMP WITHOUT TIME ZONE, 
	PRIMARY KEY (id), 
	FOREIGN KEY(workload_id) REFERENCES workloads (id)
);

CREATE INDEX ix_load_runs_workload_id ON load_runs (workload_id);

CREATE TABLE requests (
	id SERIAL NOT NULL, 
	workload_id INTEGER NOT NULL, 
	idx INTEGER NOT NULL, 
	line INTEGER NOT NULL, 
	messages_json TEXT NOT NULL, 
	reference TEXT, 
	logged_output TEXT, 
	logged_prompt_tokens INTEGER, 
	logged_output_tokens INTEGER, 
	request_id VARCHAR(200), 
	metadata_json TEXT NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(workload_id) REFERENCES workloads (id)
);

CREATE INDEX ix_requests_workload_id ON requests (workload_id);

CREATE TABLE runs (
	id SERIAL NOT NULL, 
	workload_id INTEGER NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	spec_json TEXT NOT NULL, 
	status VARCHAR(20) NOT NULL, 
	error TEXT, 
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	finished_at TIMESTAMP WITHOUT TIME ZONE, 
	PRIMARY KEY (id), 
	FOREIGN KEY(workload_id) REFERENCES workloads (id)
);

CREATE INDEX ix_runs_workload_id ON runs (workload_id);

CREATE TABLE load_samples (
	id SERIAL NOT NULL, 
	load_run_id INTEGER NOT NULL, 
	variant VARCHAR(80) NOT NULL, 
	level DOUBLE PRECISION NOT NULL, 
	request_index INTEGER NOT NULL, 
	arrival_s DOUBLE PRECISION NOT NULL, 
	sent_s DOUBLE PRECISION NOT NULL, 
	first_token_s DOUBLE PRECISION, 
	end_s DOUBLE PRECISION NOT NULL, 
	output_tokens INTEGER NOT NULL, 
	prompt_tokens INTEGER, 
	chunk_times_json TEXT NOT NULL, 
	error TEXT, 
	PRIMARY KEY (id), 
	FOREIGN KEY(load_run_id) REFERENCES load_runs (id)
);

CREATE INDEX ix_load_samples_load_run_id ON load_samples (load_run_id);

CREATE TABLE variants (
	id SERIAL NOT NULL, 
	run_id INTEGER NOT NULL, 
	position INTEGER NOT NULL, 
	name VARCHAR(80) NOT NULL, 
	spec_json TEXT NOT NULL, 
	status VARCHAR(20) NOT NULL, 
	error TEXT, 
	load_s DOUBLE PRECISION, 
	weight_bytes INTEGER, 
	peak_mem_bytes INTEGER, 
	throughput_tok_s DOUBLE PRECISION, 
	wall_s DOUBLE PRECISION, 
	device VARCHAR(80), 
	technique_report_json TEXT NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(run_id) REFERENCES runs (id)
);

CREATE INDEX ix_variants_run_id ON variants (run_id);

CREATE TABLE results (
	id SERIAL NOT NULL, 
	variant_id INTEGER NOT NULL, 
	request_index INTEGER NOT NULL, 
	output_text TEXT NOT NULL, 
	prompt_tokens_logged INTEGER, 
	prompt_tokens_original INTEGER NOT NULL, 
	prompt_tokens_sent INTEGER NOT NULL, 
	output_tokens INTEGER NOT NULL, 
	ttft_s DOUBLE PRECISION NOT NULL, 
	latency_s DOUBLE PRECISION NOT NULL, 
	compress_s DOUBLE PRECISION NOT NULL, 
	error TEXT, 
	ref_exact DOUBLE PRECISION, 
	ref_contains DOUBLE PRECISION, 
	ref_f1 DOUBLE PRECISION, 
	base_rouge_l DOUBLE PRECISION, 
	base_cosine DOUBLE PRECISION, 
	PRIMARY KEY (id), 
	FOREIGN KEY(variant_id) REFERENCES variants (id)
);

CREATE INDEX ix_results_variant_id ON results (variant_id);
