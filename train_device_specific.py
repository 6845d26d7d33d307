"""Stage 2: fine-tune one copy of the general model per training device, then test the system.

    python train_device_specific.py --ckpt_id <stage-1 run id> --dataset_dir DIR
    python train_device_specific.py --ckpt_id <stage-2 run id> --evaluate --eval_dir EVAL_DIR
    python train_device_specific.py --demo --ckpt_id <id of a train_base.py --demo run>
    python train_device_specific.py --resume     # continue the newest stopped run of this script

Each device's copy is trained only on that device's part of the 25 % split; at test time every
clip goes through its device's model and devices without one use the general model.
"""
from dataset.dcase25 import of_devices
from helpers.outputs.complexity import complexity_markdown, device_models_complexity
from helpers.outputs.predictions import evaluate
from helpers.setup.console import is_rank_zero, rank_zero_print, run_cli
from helpers.setup.device_system import save_system, stage2_system
from helpers.setup.flags import parse_args, stage2_parser
from helpers.setup.network_flags import set_network_flags
from helpers.setup.runs import network_of_run
from helpers.stage import Stage
from helpers.training.builder import build_module
from models.registry import network_record


def main(argv=None):
    parser = stage2_parser(__doc__)
    # the network stage 2 trains is that of the checkpoint it starts from: its training defaults apply
    args = parse_args(parser, argv, network=network_of_run(parser.parse_args(argv)))
    stage = Stage(args, "device")
    if args.evaluate:
        return evaluate(args)

    # the data is checked before anything is written: a broken set never starts a run
    inputs = stage.check_inputs(teacher_devices=args.train_devices)
    train, test = inputs.train, inputs.test
    run = stage.take_run()
    if run.finished is not None:
        return run.run_id, run.finished
    # the checkpoint is read and checked before the run is recorded: a refused one leaves no run folder
    system, general_ckpt, completed = stage2_system(args, run.resume_from)
    stage.record_run(run)
    set_network_flags(args, network_record(system))  # the run's flags describe the network it trains
    stage.announce_model(system.base_model, sentence=False)  # every device model starts as a copy of it
    config = vars(args)
    if run.resume_from is None and is_rank_zero():
        save_system(run.run_dir, system, config, general_ckpt, completed)
    logger = stage.open_logger(run)

    for device in system.device_models:
        if device in completed:
            rank_zero_print(f"Device {device} was fine-tuned before this run was stopped: skipped.")
            continue
        # each phase trains only this device's copy; its curves are logged as "<device>/..."
        rank_zero_print(f"\n=== Fine-tuning the model of device {device} ===")
        module = build_module(config, model=system.device_models[device], log_prefix=f"{device}/",
                              input_sample_rate=stage.input_rate, teacher=inputs.teacher)
        phase_ckpt = stage.checkpoint_path(run, f"last-{device}")
        trainer, train_loader = stage.trainer(run, logger, inputs, of_devices(train, device), phase_ckpt.stem,
                                              selected_from=train)
        trainer.fit(module, train_loader, stage.loader(inputs, of_devices(test, device), trainer, selected_from=test),
                    ckpt_path=phase_ckpt if phase_ckpt.is_file() else None)
        completed.append(device)
        if trainer.is_global_zero:  # the device is done: the container keeps it, its phase file can go
            save_system(run.run_dir, system, config, general_ckpt, completed)
            phase_ckpt.unlink(missing_ok=True)

    # final test on the whole test split, 16-bit parameters: the general model and the device-specific system
    general_module = build_module(config, model=system.base_model, log_prefix="general/",
                                  input_sample_rate=stage.input_rate)
    system_module = build_module(config, model=system, input_sample_rate=stage.input_rate)
    complexity = device_models_complexity(system, stage.input_shape())
    logger.log_hyperparams({"complexity": complexity})
    rank_zero_print("\n" + complexity_markdown(complexity))
    tester = stage.tester(run, logger)
    test_loader = stage.loader(inputs, test, tester)
    tester.test(general_module, test_loader, verbose=False)
    tester.test(system_module, test_loader, verbose=False)
    systems = {"General Model": general_module, "Device-specific Models": system_module}
    results = stage.finish(run, logger, systems, complexity, general_checkpoint=general_ckpt)
    return run.run_id, results


if __name__ == "__main__":
    run_cli(main)
