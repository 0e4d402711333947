import { ParseError } from '../../errors.js';
import type { TfjsWeightArtifacts } from './tfjs-weights.js';

/**
 * The layer graph of a Keras functional model (the JSON topology tfjs uses): layers by name, what
 * each reads and who reads it.
 */
export interface KerasLayer {
  name: string;
  class_name: string;
  config: Record<string, unknown>;
  inbound_nodes: Array<Array<[string, number, number, unknown?]>>;
}

export interface KerasModelArtifacts extends TfjsWeightArtifacts {
  modelTopology: {
    model_config?: { class_name: string; config: { layers: KerasLayer[] } };
    config?: { layers: KerasLayer[] };
  };
}

export class KerasTopology {
  private readonly layers = new Map<string, KerasLayer>();
  private readonly readers = new Map<string, string[]>();

  constructor(topology: KerasModelArtifacts['modelTopology']) {
    const layers = topology.model_config?.config.layers ?? topology.config?.layers;
    if (!layers) throw new ParseError('Keras topology has no model_config.config.layers');
    for (const layer of layers) {
      this.layers.set(layer.name, layer);
      for (const inbound of this.inboundNames(layer)) this.addReader(inbound, layer.name);
    }
  }

  find(layerName: string): KerasLayer | undefined {
    return this.layers.get(layerName);
  }

  layer(layerName: string): KerasLayer {
    const layer = this.layers.get(layerName);
    if (!layer) throw new ParseError(`layer "${layerName}" is not in the model`, { meta: { layer: layerName } });
    return layer;
  }

  /** Names of the layers `layer` reads, in order. */
  inboundNames(layer: KerasLayer): string[] {
    if (layer.inbound_nodes.length > 1) {
      throw new ParseError(`layer ${layer.name} is shared (called more than once): not supported`, { meta: { layer: layer.name } });
    }
    return (layer.inbound_nodes[0] ?? []).map(([name]) => name);
  }

  /** Names of the layers (or other readers, such as the model's output) that read `layerName`. */
  readersOf(layerName: string): readonly string[] {
    return this.readers.get(layerName) ?? [];
  }

  addReader(layerName: string, reader: string): void {
    this.readers.set(layerName, [...this.readersOf(layerName), reader]);
  }

  inputLayerName(): string {
    for (const layer of this.layers.values()) if (layer.class_name === 'InputLayer') return layer.name;
    throw new ParseError('the model has no InputLayer');
  }
}
