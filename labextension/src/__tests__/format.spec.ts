import {
  describeEnd,
  describePartition,
  formatDuration,
  formatEstimate,
  formatMemory,
  partitionName
} from '../format';
import { IPartition, ITrans, plainTrans } from '../tokens';

describe('formatDuration', () => {
  it('writes HH:MM:SS, and D-HH:MM:SS from a day on, as SLURM does', () => {
    expect(formatDuration(0)).toBe('00:00:00');
    expect(formatDuration(59.9)).toBe('00:00:59');
    expect(formatDuration(3 * 3600 + 25 * 60 + 7)).toBe('03:25:07');
    expect(formatDuration(86400 + 3600)).toBe('1-01:00:00');
    expect(formatDuration(-5)).toBe('00:00:00');
  });
});

describe('formatEstimate', () => {
  const now = Date.parse('2026-12-01T10:00:00Z');

  it('counts down to SLURM estimate', () => {
    const text = formatEstimate('2026-12-01T10:09:30Z', now);
    expect(text.startsWith('in 00:09:30 (')).toBe(true);
  });

  it('says any moment now once the estimate has passed', () => {
    expect(formatEstimate('2026-12-01T09:59:00Z', now).startsWith('any moment now (')).toBe(true);
  });

  it('keeps what it cannot read', () => {
    expect(formatEstimate('N/A', now)).toBe('N/A');
  });

  it('goes through the translation bundle', () => {
    const upper: ITrans = {
      __: (msg, ...args) => plainTrans.__(msg.toUpperCase(), ...args),
      _n: plainTrans._n
    };
    expect(formatEstimate('2026-12-01T10:01:00Z', now, upper).startsWith('IN 00:01:00')).toBe(true);
  });
});

describe('formatMemory', () => {
  it('writes SLURM memory in human (binary) units', () => {
    expect(formatMemory('200000M')).toBe('195.3 GiB');
    expect(formatMemory('40G')).toBe('40 GiB');
    expect(formatMemory('512M')).toBe('512 MiB');
    expect(formatMemory('1024')).toBe('1 GiB'); // a bare number is megabytes
    expect(formatMemory(2 * 1024 * 1024)).toBe('2 TiB');
    expect(formatMemory('1.5T')).toBe('1.5 TiB');
  });

  it('keeps what it cannot read, and shows nothing for nothing', () => {
    expect(formatMemory('lots')).toBe('lots');
    expect(formatMemory(null)).toBe('');
    expect(formatMemory('')).toBe('');
  });
});

describe('partitions', () => {
  const gpu: IPartition = {
    name: 'gpu',
    default: false,
    maxTime: '1-00:00:00',
    maxTimeSeconds: 86400,
    maxCpusPerNode: 16,
    maxMemPerNode: '195G',
    maxMemPerNodeMb: 200000,
    gpus: { tesla: 2 },
    state: 'up'
  };

  it('names the default one', () => {
    expect(partitionName({ ...gpu, default: true })).toBe('gpu (default)');
    expect(partitionName(gpu)).toBe('gpu');
  });

  it('writes every limit, GPUs by kind, and a partition that is not up', () => {
    expect(describePartition(gpu)).toBe('gpu: up to 1-00:00:00, 16 CPUs, 195.3 GiB, 2 tesla GPUs');
    expect(
      describePartition({
        ...gpu,
        maxTime: null,
        maxCpusPerNode: 1,
        gpus: { gpu: 1 },
        state: 'down'
      })
    ).toBe('gpu: no time limit, 1 CPU, 195.3 GiB, 1 GPU [down]');
  });
});

describe('describeEnd', () => {
  it('says how the last job ended', () => {
    const end = (reason: any) => describeEnd({ jobId: '7', reason, at: '' }, 'gemini');
    expect(end('idle')).toBe("gemini's job 7 was cancelled: nobody had used it for a while.");
    expect(end('walltime')).toBe("gemini's job 7 reached its time limit.");
    expect(end('stopped')).toBe("gemini's job 7 was stopped from here.");
    expect(end('failed')).toBe("gemini's job 7 failed.");
    expect(end('slurm')).toBe("gemini's job 7 ended outside this server (cancelled or done).");
  });
});
