// One onnxruntime session in a worker thread. onnxruntime-node runs inference synchronously on the
// calling thread, so in the main thread a batch would block every I/O completion (decoding, the
// queue, the index) for the whole run; here the main thread stays free and the pipeline overlaps.
// Plain JavaScript on purpose: worker threads do not inherit the TypeScript loader.
import { parentPort, workerData } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';

let session;
try {
  session = await ort.InferenceSession.create(workerData.path, workerData.options);
  parentPort.postMessage({ type: 'ready', inputNames: session.inputNames, outputNames: session.outputNames });
} catch (err) {
  parentPort.postMessage({ type: 'init-error', message: err instanceof Error ? err.message : String(err) });
}

parentPort.on('message', async (msg) => {
  if (msg.type === 'close') {
    await session?.release();
    parentPort.close();
    return;
  }
  if (msg.type !== 'run') return;
  try {
    const extraOutputs = msg.extraOutputs ?? [];
    const out = await session.run({ [msg.inputName]: new ort.Tensor(msg.dataType ?? 'float32', msg.data, msg.dims) }, [msg.outputName, ...extraOutputs]);
    const tensor = out[msg.outputName];
    const data = new Float32Array(tensor.data); // own buffer, transferable
    const transfer = [data.buffer];
    let extra;
    if (extraOutputs.length > 0) {
      extra = {};
      for (const name of extraOutputs) {
        const values = new Float32Array(out[name].data);
        extra[name] = { data: values, dims: out[name].dims };
        transfer.push(values.buffer);
      }
    }
    parentPort.postMessage({ type: 'result', id: msg.id, data, dims: tensor.dims, extra }, transfer);
  } catch (err) {
    parentPort.postMessage({ type: 'error', id: msg.id, message: err instanceof Error ? err.message : String(err) });
  }
});
