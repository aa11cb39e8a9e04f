"""CovidSeg Assist engine: weak slice labels -> pixel masks of COVID-19 lung infection. No Qt here.

Module map (imports go one way, down this list; tests/test_architecture.py checks there is no cycle):

  errors.py            exceptions a user sees (message + what to do)
  events.py            job events, CancelToken; drive() runs a job, relay() runs one inside another
  constants.py         labels, fusion modes, devices, mask values (0/1/255 in memory, 0/255/127 in PNGs)
  atomic.py            every file is written atomically
  outputs.py           where a command may write: never into its inputs, over a file only with --overwrite
  checkpoints.py       a checkpoint file read safely (weights only) and checked to hold what was expected
  study.py             Study: array (z, y, x), geometry, slice ids, unit_range() (what the networks see)
  io/                  dicom, nifti, images, loader: files <-> Study, geometry exact; dicom_seg: masks <-> DICOM SEG
  data.py              SliceSet: a study's slices in [0, 1] with labels, groups, optional ground truth
  project/             api (Project), store (snapshot, journal, lock), ops (changes as a table), corrections,
                       studies (add a study, per-study summary, every study's slices as one training set)
  distributed.py       torchrun: the process group, DDP, batches and slices shared out by rank, rank 0 the writer
  slice_cache.py       a study's decoded slices kept on disk, memory-mapped, for every rank and later runs
  runs.py              RunFolder: the only owner of paths inside a run (checkpoints, pseudo/, cams/, epochs...)
  imaging/             windowing, resize (every resize), lungs (threshold lung field, density cues), lung_model
                       (the learned lung field, its packaged weights, the fallback), augment (both stages' augmentation)
  models/              blocks, classifier (CAM), segmenter (LightUNet, build_from_spec), unet
  infer/               device (device, precision, grad scaler), model (load a run), predict (predict a study),
                       postprocess (masks kept inside the lung field, specks dropped), onnx_engine (ONNX Runtime
                       on the CPU), onnx_export (the export and parity check at the end of training)
  train_step.py        TrainStep: the optimisation step both stages share (augment, AMP, scaler, LR schedule)
  weak/                stage 1: config, classifier_training, cam (fusion), pseudo_masks, losses, job, scoring
                       (a run's classifier applied to any slices)
  synth/               synthetic lesions on clean slices: lesions (the synthesiser), calibrate (levels from CAMs),
                       source (fresh pairs per epoch), study (a run's supply), folder (`covidseg synth`)
  seg/                 stage 2: targets (supervision, validation split), losses, training (the segmenter loop),
                       prior (the label-free starting weights shipped in resources/)
  results/             metrics (Dice..., ROC AUC), evaluate, quantify (volumes, lung fields), export (NIfTI or
                       DICOM SEG), seg_import (a SEG back as a mask of the project's study), training_report
                       (a run against the data set's ground truth, reporting only)
  budget.py            the time-budget planner: device defaults, the split between the stages, ETA (no torch)
  train_config.py      TrainConfig and the --fast preset (plain data, no torch)
  throughput.py        measures both stages' training speed on their own first steps, for the planner
  pipeline.py          the `train` job: weak, then seg (which never import each other), then a report
  project_training.py  `train --project`: the train job on every study of a project, then each study predicted
  pseudo_job.py        the `pseudo` job: stage 1 alone, on a budget or the fixed schedule, under torchrun too
  suggest.py           which slice to label next: a run's classifier on every unlabelled slice, ranked
  phantom/             a synthetic chest CT with COVID-19 lesions (anatomy, vessel trees, lesions, scanner)
  demo.py              the synthetic demo study (the phantom written as NIfTI + image folder)
  cli/                 `covidseg`: parser, output, study/project/training/prediction command groups

Where state lives: a user's work in a project folder (project/), a training run's in a run folder (runs.py);
nothing is kept between calls in memory. Threads: none start here; long jobs are generators with a cancel token,
driven by the CLI, the tests, or the app's job thread (app/jobs.py).
"""

__version__ = "0.1.0"
