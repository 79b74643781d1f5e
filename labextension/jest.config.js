// Unit tests of the sidebar's model and formatters (jest, as in JupyterLab's extension
// template), in jsdom. They import no @jupyterlab package: the model takes its REST call.
module.exports = {
  testEnvironment: 'jsdom',
  roots: ['<rootDir>/src'],
  testMatch: ['**/__tests__/**/*.spec.ts'],
  transform: {
    '^.+\\.tsx?$': ['ts-jest', { tsconfig: 'tsconfig.test.json' }]
  }
};
